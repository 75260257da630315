"""Write the synthetic datasets: CheXpert layout, true masks, SCR-style organs, lesion masks.

Every image has its own random stream, ``SeedSequence(seed, spawn_key=(stream, index))``, so the
output is byte-identical for a seed whatever ``--workers`` is, and any one image can be regenerated
alone. Layout and value conventions: ``docs/FORMATS.md`` ("Synthetic dataset").
"""

from __future__ import annotations

import io
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from ...constants import CHEXPERT_COLUMNS, OBSERVATIONS
from ...io import npz_bytes, save_png_atomic, write_bytes_atomic, write_csv_atomic, write_json_atomic
from ..datalist import write_datalist
from .anatomy import sample_params
from .lateral import make_lateral
from .phantom import INFECTION, make_phantom, sample_findings

DATASET = "CheXpert-v1.0-small"
# Folder names of the SCR release (masks/<structure>/), in the order of the datalist's "label" list.
ORGAN_STRUCTURES: tuple[str, ...] = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
# Independent random streams (the first element of each image's spawn key).
STREAM_LAYOUT, STREAM_PATIENT, STREAM_STUDY, STREAM_LATERAL, STREAM_LABELS, STREAM_ORGANS, STREAM_LESIONS = range(7)
OUTPUT_DIRS: tuple[str, ...] = (DATASET, "truth", "organs", "lesions")
# zlib level of the organ and lesion PNGs: level 1 encodes several times faster than the default
# (6) for slightly larger files; encoding was about a tenth of the writer's time.
PNG_LEVEL = 1
# Full clinical resolution; beyond it a phantom is only a way to run out of memory.
MAX_SIZE = 4096


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the output; written to ``DIR/synth.json``."""

    n: int
    size: int
    seed: int
    uncertain_frac: float = 0.05
    blank_frac: float = 0.05
    lateral_frac: float = 0.1
    valid_frac: float = 0.1
    n_organs: int = 200
    n_lesions: int = 200
    normal_frac: float = 0.25
    prevalence: float = 0.22

    def validate(self) -> None:
        if self.n < 1 or self.n_organs < 0 or self.n_lesions < 0:
            raise ValueError(f"--n must be >= 1 and --n-organs/--n-lesions >= 0 (got {self.n}, {self.n_organs}, {self.n_lesions})")
        if not 32 <= self.size <= MAX_SIZE:
            raise ValueError(f"--size must be 32 to {MAX_SIZE} pixels (got {self.size})")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0 (got {self.seed})")
        for name in ("uncertain_frac", "blank_frac", "lateral_frac", "normal_frac", "prevalence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1] (got {value})")
        if not 0.0 <= self.valid_frac < 1.0:  # 1 would leave the training split empty
            raise ValueError(f"--valid-frac must be in [0, 1) (got {self.valid_frac})")
        if self.uncertain_frac + self.blank_frac > 1.0:
            raise ValueError(f"--uncertain-frac + --blank-frac must be <= 1 (got {self.uncertain_frac + self.blank_frac})")


@dataclass(frozen=True)
class Study:
    """One study of the CheXpert tree: where it goes and who it belongs to."""

    index: int
    patient: int
    study: int
    split: str  # "train" | "valid"
    lateral: bool

    def path(self, view: str) -> str:
        name = "view1_frontal.jpg" if view == "frontal" else "view2_lateral.jpg"
        return f"{DATASET}/{self.split}/patient{self.patient:05d}/study{self.study}/{name}"


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """The random stream of one item: independent of every other, whatever the processing order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def plan_studies(cfg: SynthConfig) -> list[Study]:
    """Group ``n`` studies into patients (one to three each), pick validation patients and laterals."""
    rng = rng_for(cfg.seed, STREAM_LAYOUT, 0)
    counts: list[int] = []
    while sum(counts) < cfg.n:
        counts.append(min(int(rng.choice([1, 1, 1, 2, 2, 3])), cfg.n - sum(counts)))
    n_valid = round(len(counts) * cfg.valid_frac)
    valid = set(rng.permutation(len(counts))[:n_valid].tolist())
    studies = []
    for patient, count in enumerate(counts, start=1):
        for s in range(1, count + 1):
            studies.append(Study(len(studies), patient, s, "valid" if patient - 1 in valid else "train",
                                 bool(rng.random() < cfg.lateral_frac)))
    return studies


def patient_meta(cfg: SynthConfig, patient: int) -> tuple[str, int]:
    rng = rng_for(cfg.seed, STREAM_PATIENT, patient, 0)
    return ("Female" if rng.random() < 0.45 else "Male"), int(rng.integers(18, 91))


def reported_labels(cfg: SynthConfig, positive: np.ndarray, study: Study) -> list[str]:
    """CSV cells as CheXpert writes them ("1.0", "0.0", "-1.0", ""), from the true labels.

    Training rows get uncertain and blank cells at the configured rates (never an uncertain
    "No Finding", which CheXpert does not use); validation rows stay 0/1, as in CheXpert's
    radiologist-labelled validation set.
    """
    rng = rng_for(cfg.seed, STREAM_LABELS, study.index)
    draws = rng.random(len(OBSERVATIONS))
    cells = []
    for i, value in enumerate(positive):
        cell = "1.0" if value else "0.0"
        if study.split == "train":
            if draws[i] < cfg.uncertain_frac and i > 0:
                cell = "-1.0"
            elif cfg.uncertain_frac <= draws[i] < cfg.uncertain_frac + cfg.blank_frac:
                cell = ""
        cells.append(cell)
    return cells


def jpeg_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _write_study(job: tuple[SynthConfig, Path, Study]) -> tuple[list[list[str]], list[int]]:
    """Render and write one study (frontal, truth, optional lateral); return its CSV rows and true labels."""
    cfg, root, study = job
    rng = rng_for(cfg.seed, STREAM_STUDY, study.index)
    anatomy_rng = rng_for(cfg.seed, STREAM_PATIENT, study.patient, 1)
    findings = sample_findings(rng, cfg.normal_frac, cfg.prevalence)
    phantom = make_phantom(rng, cfg.size, findings, params=sample_params(anatomy_rng))
    frontal = study.path("frontal")
    write_bytes_atomic(root / frontal, jpeg_bytes(phantom.image))
    write_bytes_atomic(root / "truth" / (frontal[: -len(".jpg")] + ".npz"), npz_bytes({"mask": phantom.truth}, compresslevel=1))
    sex, age = patient_meta(cfg, study.patient)
    ap_pa = "AP" if phantom.positive[OBSERVATIONS.index("Support Devices")] or rng.random() < 0.3 else "PA"
    labels = reported_labels(cfg, phantom.positive, study)
    rows = [[frontal, sex, str(age), "Frontal", ap_pa, *labels]]
    if study.lateral:
        lateral = study.path("lateral")
        image = make_lateral(rng_for(cfg.seed, STREAM_LATERAL, study.index), cfg.size, phantom.anatomy.params)
        write_bytes_atomic(root / lateral, jpeg_bytes(image))
        rows.append([lateral, sex, str(age), "Lateral", "", *labels])
    return rows, phantom.positive.tolist()


def _write_organ(job: tuple[SynthConfig, Path, int]) -> dict[str, Any]:
    cfg, root, index = job
    rng = rng_for(cfg.seed, STREAM_ORGANS, index)
    phantom = make_phantom(rng, cfg.size, sample_findings(rng, cfg.normal_frac, cfg.prevalence))
    a = phantom.anatomy
    masks = {"left lung": a.lung["L"], "right lung": a.lung["R"], "heart": a.heart,
             "left clavicle": a.clavicle["L"], "right clavicle": a.clavicle["R"]}
    stem = f"organ{index:05d}"
    save_png_atomic(root / "images" / f"{stem}.png", phantom.image, compress_level=PNG_LEVEL)
    for name in ORGAN_STRUCTURES:
        save_png_atomic(root / "masks" / name / f"{stem}.png", masks[name].astype(np.uint8) * 255,
                        compress_level=PNG_LEVEL)
    return {"image": f"images/{stem}.png", "label": [f"masks/{name}/{stem}.png" for name in ORGAN_STRUCTURES],
            "id": stem}


def _write_lesion(job: tuple[SynthConfig, Path, int]) -> dict[str, Any]:
    """Most lesion images carry an infection (opacity, consolidation or pneumonia); some are clear."""
    cfg, root, index = job
    rng = rng_for(cfg.seed, STREAM_LESIONS, index)
    force = INFECTION if rng.random() < 0.75 else ()
    phantom = make_phantom(rng, cfg.size, sample_findings(rng, cfg.normal_frac, cfg.prevalence, force))
    infection = phantom.truth[[OBSERVATIONS.index(o) for o in INFECTION]].any(axis=0)
    stem = f"lesion{index:05d}"
    save_png_atomic(root / "images" / f"{stem}.png", phantom.image, compress_level=PNG_LEVEL)
    save_png_atomic(root / "masks" / f"{stem}.png", infection.astype(np.uint8) * 255, compress_level=PNG_LEVEL)
    return {"image": f"images/{stem}.png", "label": [f"masks/{stem}.png"], "id": stem}


def _map(fn: Callable[[Any], Any], jobs: list, workers: int) -> Iterator[Any]:
    """Ordered map, in processes when ``workers > 1`` (results never depend on the worker count)."""
    if workers <= 1 or len(jobs) < 2:
        return map(fn, jobs)
    pool = ProcessPoolExecutor(max_workers=workers)
    chunk = max(1, len(jobs) // (workers * 8))
    try:
        return iter(list(pool.map(fn, jobs, chunksize=chunk)))
    finally:
        pool.shutdown()


def _split_items(cfg: SynthConfig, items: list[dict[str, Any]], stream: int) -> dict[str, list]:
    rng = rng_for(cfg.seed, STREAM_LAYOUT, stream)
    valid = set(rng.permutation(len(items))[: round(len(items) * cfg.valid_frac)].tolist())
    return {"training": [x for i, x in enumerate(items) if i not in valid],
            "validation": [x for i, x in enumerate(items) if i in valid]}


def write_csv(path: Path, rows: Iterable[list[str]]) -> None:
    write_csv_atomic(path, CHEXPERT_COLUMNS, rows)


def write_synthetic(cfg: SynthConfig, out: Path, workers: int = 1, overwrite: bool = False,
                    progress: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Generate every synthetic set under ``out``; return the summary also saved as ``synth.json``."""
    cfg.validate()
    out = Path(out).resolve()
    existing = [d for d in OUTPUT_DIRS if (out / d).exists()]
    if existing and not overwrite:
        raise ValueError(f"{out}: already holds {', '.join(existing)}; pass --overwrite to replace them")
    for d in existing:
        shutil.rmtree(out / d)
    out.mkdir(parents=True, exist_ok=True)

    studies = plan_studies(cfg)
    rows: dict[str, list] = {"train": [], "valid": []}
    positives = np.zeros(len(OBSERVATIONS), int)
    for study, (study_rows, positive) in zip(studies, _map(_write_study, [(cfg, out, s) for s in studies], workers)):
        rows[study.split].extend(study_rows)
        positives += positive
    for split in ("train", "valid"):
        write_csv(out / DATASET / f"{split}.csv", rows[split])
    progress(f"wrote {len(studies)} studies ({sum(s.lateral for s in studies)} with a lateral view) to {out / DATASET}")

    summary: dict[str, Any] = {"config": asdict(cfg), "studies": len(studies),
                               "rows": {k: len(v) for k, v in rows.items()},
                               "true_positives": dict(zip(OBSERVATIONS, positives.tolist()))}
    for name, fn, count, stream, classes in (
        ("organs", _write_organ, cfg.n_organs, STREAM_ORGANS, list(ORGAN_STRUCTURES)),
        ("lesions", _write_lesion, cfg.n_lesions, STREAM_LESIONS, ["infection"]),
    ):
        if count == 0:
            continue
        root = out / name
        items = list(_map(fn, [(cfg, root, i) for i in range(count)], workers))
        write_datalist(root / "datalist.json", {"classes": classes, **_split_items(cfg, items, stream)})
        progress(f"wrote {count} {name} images to {root}")
    write_json_atomic(out / "synth.json", summary)
    return summary
