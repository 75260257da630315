"""Map the small real classification sets in ``../shared/data`` onto CheXpert's 14 observations.

The sets carry other label vocabularies (NIH ChestX-ray14 findings, ieee8023 COVID-19 findings,
Kermany paediatric pneumonia). Each is mapped conservatively: an observation the source says
nothing about stays blank (unknown, masked by the ingestion policy), never a guessed negative;
a positive kind of opacity makes "Lung Opacity" positive, as in CheXpert's hierarchy.
The result is a CheXpert-layout tree, so the rest of the pipeline reads real and CheXpert data
through one path (``prepare-chexpert``).
"""

from __future__ import annotations

import csv
import filecmp
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterable

from cxrdoll.constants import CHEXPERT_COLUMNS, OBSERVATIONS
from cxrdoll.io import atomic_path, write_csv_atomic

DATASET_NAME = "CheXpert-shared"

# NIH ChestX-ray14 columns -> CheXpert observations (several NIH findings may map to one).
NIH_TO_CHEXPERT: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Pleural_Thickening": "Pleural Other",
}
# NIH's 14 findings: those of NIH_TO_CHEXPERT and three without a CheXpert observation.
NIH_FINDINGS: tuple[str, ...] = (*NIH_TO_CHEXPERT, "Emphysema", "Fibrosis", "Hernia")


@dataclass(frozen=True)
class SharedImage:
    """One image of a shared set with its CheXpert-vocabulary labels (None = unknown)."""

    source: str
    image: Path
    patient: str
    sex: str
    age: str
    view: str
    labels: dict[str, int]


def _flag(row: dict[str, str], column: str) -> int:
    """A 0/1 cell; anything else is an error naming the column (the caller adds file and row)."""
    value = row[column]
    if value.strip() not in ("0", "1"):
        raise ValueError(f"column {column!r}: value {value!r} is not 0 or 1")
    return int(value)


# CheXpert's observation hierarchy: these are kinds of lung opacity, so a positive one makes
# "Lung Opacity" positive too (NIH's Infiltration alone would leave a consolidation a known negative).
OPACITY_CHILDREN: tuple[str, ...] = ("Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")

# The downstream lung set shares ieee8023's patients with cls_covid_ieee8023.
LUNG_SET = "seg_lungs_covid_ieee8023_v7labs"


def nih_labels(findings: Collection[str], abnormal: bool) -> dict[str, int]:
    """CheXpert observations from the NIH findings present: 1 or 0 for each observation NIH labels, none
    for the others (unknown). ``abnormal``: any finding at all, unmapped ones (Emphysema, ...) included.

    One mapping for the 64 px NIH subset and the full NIH release (:mod:`cxrdoll.data.nih`)."""
    labels = dict.fromkeys(NIH_TO_CHEXPERT.values(), 0)
    for nih, obs in NIH_TO_CHEXPERT.items():
        if nih in findings:
            labels[obs] = 1
    labels["Lung Opacity"] = max(labels["Lung Opacity"], *(labels[o] for o in OPACITY_CHILDREN))
    labels["No Finding"] = int(not abnormal)
    return labels


def _nih(row: dict[str, str]) -> dict[str, int]:
    return nih_labels({nih for nih in NIH_TO_CHEXPERT if _flag(row, nih)}, bool(_flag(row, "abnormal")))


def _ieee8023(row: dict[str, str]) -> dict[str, int]:
    if _flag(row, "no_finding"):
        return {"No Finding": 1, "Pneumonia": 0, "Lung Opacity": 0}
    if row["finding_primary"] == "ARDS":
        # Diffuse airspace opacity; not labelled as pneumonia by the source.
        return {"No Finding": 0, "Lung Opacity": 1}
    return {"No Finding": 0, "Pneumonia": 1, "Lung Opacity": 1}


def _kermany(row: dict[str, str]) -> dict[str, int]:
    if _flag(row, "pneumonia"):
        return {"No Finding": 0, "Pneumonia": 1, "Lung Opacity": 1}
    return {"No Finding": 1, "Pneumonia": 0, "Lung Opacity": 0}


# folder -> (label mapper, patient column, sex column, age column, view column)
SOURCES: dict[str, tuple[Callable[[dict[str, str]], dict[str, int]], str, str | None, str | None, str | None]] = {
    "cls_nih_cxr14_64px": (_nih, "patient_id", "sex", "age", "view"),
    "cls_covid_ieee8023": (_ieee8023, "patientid", "sex", "age", "view"),
    "cls_pneumonia_kermany": (_kermany, "patient", None, None, None),
}


def read_shared_sets(shared_dir: Path, sources: Iterable[str] = tuple(SOURCES)) -> list[SharedImage]:
    """Read each set's ``labels.csv``; a missing column, short row or bad cell is an error naming
    the file, row and column."""
    items: list[SharedImage] = []
    for source in sources:
        mapper, patient_col, sex_col, age_col, view_col = SOURCES[source]
        csv_path = shared_dir / source / "labels.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{csv_path}: labels.csv of shared set {source!r} not found")
        with csv_path.open(newline="") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                short = [column for column, value in row.items() if value is None]  # DictReader's fill for a short row
                if short:
                    raise ValueError(f"{csv_path}: row {line}, column {short[0]!r}: no value (row cut short?)")
                try:
                    labels = mapper(row)
                    patient = row[patient_col]
                except KeyError as err:
                    raise ValueError(f"{csv_path}: row {line} has no column {err}") from None
                except ValueError as err:
                    raise ValueError(f"{csv_path}: row {line}, {err}") from None
                items.append(
                    SharedImage(
                        source=source,
                        image=shared_dir / source / row["image"],
                        patient=f"{source}:{patient}",
                        sex={"M": "Male", "F": "Female"}.get(row.get(sex_col or "", ""), "Unknown"),
                        age=row.get(age_col or "", "") or "",
                        view="AP" if row.get(view_col or "", "").startswith("AP") else "PA",
                        labels=labels,
                    )
                )
    return items


def lung_validation_patients(shared_dir: Path) -> frozenset[str]:
    """``cls_covid_ieee8023:<patient>`` (as ``SharedImage.patient``) for every patient of the lung
    set's validation split.

    Their images would otherwise go through the classifiers and DoLL pre-training before the
    adapters are validated on them (17 images of 12 patients in the shared data). Empty when the
    lung set is absent.
    """
    from cxrdoll.data.segmentation import shared_lungs_datalist

    root = shared_dir / LUNG_SET
    if not (root / "datalist.json").is_file():
        return frozenset()
    metadata = root / "datalist.csv"
    with metadata.open(newline="") as fh:
        patient_of = {Path(row["image"]).name: row["patientid"] for row in csv.DictReader(fh)}
    names = [Path(item["image"]).name for item in shared_lungs_datalist(root)["validation"]]
    missing = [name for name in names if name not in patient_of]
    if missing:
        raise ValueError(f"{metadata}: no patientid for validation image(s) {missing[:3]}")
    return frozenset(f"cls_covid_ieee8023:{patient_of[name]}" for name in names)


def write_chexpert_layout(items: list[SharedImage], out_dir: Path) -> Path:
    """Copy images into ``OUT/CheXpert-shared/train/patientNNNNN/studyN/view1_frontal.png`` with a train.csv.

    Patients are numbered in first-seen order, so the layout is deterministic; ``sources.csv`` keeps
    the mapping back to the original files. An image already in place is kept only when it is the
    same file. Returns the CSV path.
    """
    root = out_dir / DATASET_NAME
    patient_numbers: dict[str, int] = {}
    studies: dict[str, int] = defaultdict(int)
    rows, provenance = [], []
    for item in items:
        number = patient_numbers.setdefault(item.patient, len(patient_numbers) + 1)
        studies[item.patient] += 1
        rel = Path(DATASET_NAME, "train", f"patient{number:05d}", f"study{studies[item.patient]}", "view1_frontal.png")
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        # a re-run with other --sources numbers patients differently: same path, another image
        if not (dest.is_file() and filecmp.cmp(item.image, dest, shallow=False)):
            with atomic_path(dest) as tmp:
                shutil.copyfile(item.image, tmp)
        values = ["" if item.labels.get(o) is None else str(item.labels[o]) for o in OBSERVATIONS]
        rows.append([rel.as_posix(), item.sex, item.age, "Frontal", item.view, *values])
        provenance.append([rel.as_posix(), item.source, str(item.image)])
    csv_path = root / "train.csv"
    write_csv_atomic(csv_path, list(CHEXPERT_COLUMNS), rows)
    write_csv_atomic(root / "sources.csv", ["Path", "source", "original"], provenance)
    return csv_path



