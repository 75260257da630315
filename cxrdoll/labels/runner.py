"""The labelling loop: sharded over ranks, resumable, skipping unreadable inputs.

One image at a time (by default) through: classifier probabilities -> target policy -> one
explainer call per classifier for all of that classifier's targets -> post-process -> distil and
boost per observation -> binarise -> one atomic ``.npz``. Finished images are never redone, so a
killed run resumes where it stopped and a re-run rewrites nothing; a label made from another image
than the datalist now names under its id (new pixels behind the same id) is refused, not reused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.any_image import DICOM_SUFFIXES, LoadAnyImaged, pil_error
from cxrdoll.data.datalist import DATALIST_KINDS, PackedItems, absolute_images, item_kind
from cxrdoll.io import as_json, file_sha256, read_json, same_file_key, without_nan, write_json_atomic
from cxrdoll.labels.binarise import METHODS, binarise
from cxrdoll.labels.boost import boost
from cxrdoll.labels.distil import WEIGHT_SCHEMES, skill_weights
from cxrdoll.labels.postprocess import postprocess
from cxrdoll.labels.selection import Registry, best_overall, load_registry, select_models, single_model_selection
from cxrdoll.labels.targets import POLICIES, label_state, raw_labels, target_indices
from cxrdoll.labels.writer import (SHARD_DIR, append_source, finalise, image_source, label_path, read_sources,
                                   record_code_version, shard_path, sources_path, trim_torn_source, write_label,
                                   write_shard_record)
from cxrdoll.networks.encoders import checked_image_size

logger = logging.getLogger("cxrdoll.labels")
SOURCE_IDENTITY = ("size", "mtime_ns")  # what makes a source record's image the same file

# Labeller explainer id -> (cxrdoll.explain name, whether classifiers are chosen per observation by tau).
LABELLER_EXPLAINERS: dict[str, tuple[str, bool]] = {
    "doll_ig": ("ig", True),
    "ig": ("ig", False),
    "gradcam": ("gradcam", False),
    "gradcampp": ("gradcampp", False),
    "occlusion": ("occlusion", False),
}


# Always images per second (tqdm's default flips to s/img below 1 img/s).
_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]"


def warn_no_targets(written: int, targeted: np.ndarray, policy: str) -> None:
    """Warn when none of the images this run labelled had a target observation: every label it
    wrote is empty (a datalist without positive raw labels, or a policy that targets nothing)."""
    if written and not targeted.any():
        logger.warning("none of the %d images labelled has a target observation under policy %r, so every label "
                       "written is empty and pre-training on them stops at its first epoch: check the datalist's "
                       "raw_label (1 = positive), or --policy positives_uncertain / ensemble_predicted",
                       written, policy)


def warn_empty_positives(targeted: np.ndarray, empty: np.ndarray) -> None:
    """Warn of observations whose every positive mask this run wrote came out empty: a
    pre-training would learn "positive = nothing there" from them (binarisation or agreement
    settings that no map reaches)."""
    names = [f"{name} ({n})" for name, n, e in zip(OBSERVATIONS, targeted, empty) if n and e == n]
    if names:
        logger.warning("every positive mask written for %s is empty: check binarise_method/binarise_value and "
                       "min_agree/agree_threshold", ", ".join(names))


@dataclass
class LabelResult:
    """What one labelled image hands to handlers (overlays, TensorBoard)."""

    id: str
    image: torch.Tensor  # (1, S, S) in [0, 1]
    soft: np.ndarray  # float32 (14, S, S)
    mask: np.ndarray  # uint8 (14, S, S)
    state: np.ndarray  # int8 (14,)


class _Inputs(Dataset):
    """Loads each datalist item; a failure becomes an ``error`` entry instead of an exception."""

    def __init__(self, items: Sequence[dict], image_size: int) -> None:
        self.items = PackedItems(items)  # not a list of dicts, which each forked worker copied as it read
        self.image_size = image_size
        self.load = LoadAnyImaged(image_size)  # PNG/JPEG or DICOM, as the classifiers were trained on

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        try:
            raw = raw_labels(item)
            source = image_source(item["image"])  # before reading: a file replaced meanwhile then fails the check
            image = torch.as_tensor(self.load({"image": item["image"]})["image"])
            if image.shape != (1, self.image_size, self.image_size) or not torch.isfinite(image).all():
                raise ValueError(f"loaded as {tuple(image.shape)} with non-finite or wrong-sized data")
            if bool(image.amax() == image.amin()):  # a blank export: explanations of it are noise, not anatomy
                raise ValueError(f"a constant image (every pixel {float(image[0, 0, 0]):.3g} of 1 at "
                                 f"{self.image_size} px): nothing in it to localise")
        except Exception as err:  # corrupt, missing or unreadable input: skip it and say why
            return {"item": item, "error": _reason(item, err)}
        return {"item": item, "image": image, "raw": raw, "source": source}


def _reason(item: dict, err: Exception) -> str:
    """One line saying why an input was skipped.

    MONAI's loader retries every registered reader and folds all their tracebacks into one message;
    for an unreadable file, PIL's own error on a direct open is the clear reason.
    """
    path = Path(str(item.get("image", "")))
    if isinstance(err, ValueError) and "raw_label" in str(err):
        return str(err)
    if not path.is_file():
        return f"FileNotFoundError: {path}: file not found"
    pil_err = None if path.name.lower().endswith(DICOM_SUFFIXES) else pil_error(str(path))
    if pil_err is not None:
        return f"{type(pil_err).__name__}: {' '.join(str(pil_err).split())}"[:300]
    while err.__cause__ is not None:
        err = err.__cause__
    first_line = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first_line}"[:300]


def _describe(source: dict[str, Any]) -> str:
    modified = datetime.fromtimestamp(source["mtime_ns"] / 1e9).isoformat(sep=" ")
    return f"{source['image']} ({source['size']} bytes, modified {modified})"


def _changed_sources_message(output_dir: Path, changed: list[tuple[Path, dict, dict]]) -> str:
    """Which labels were made from other images, the first in full, and the way out."""
    label, before, now = changed[0]
    differ = [name for key, name in (("image", "path"), ("size", "size"), ("mtime_ns", "modification time"))
              if before[key] != now[key]]
    others = [str(path) for path, _, _ in changed[1:6]] + (["..."] if len(changed) > 6 else [])
    return (
        f"{output_dir}: {len(changed)} label file(s) were made from other images than the datalist now names "
        f"under their ids: {label} was made from {_describe(before)}, the datalist names {_describe(now)} "
        f"({' / '.join(differ)} differ)" + (f"; also {', '.join(others)}" if others else "")
        + "; delete those label files to label their images again, or use a new output_dir"
    )


def _check_label_names(path: Path, sections: dict[str, list[dict]]) -> None:
    """Refuse, before anything is labelled, an id that names no label file (it would end the run at its
    write) and two ids naming one: a repeat, another extension, or, on a disk blind to case and
    Unicode normalisation (macOS, Windows), another case or form: one label would replace the other."""
    owners: dict[str, str] = {}  # label file, as such a disk sees it -> the id that names it
    for section, items in sections.items():
        for i, item in enumerate(items):
            try:
                target = label_path(".", item["id"]).as_posix()
            except ValueError as err:
                raise ValueError(f"{path}: {section}[{i}]: {err}") from None
            key = same_file_key(target)
            if key in owners:
                raise ValueError(f"{path}: ids {owners[key]!r} and {item['id']!r} name the same label file {target!r} "
                                 "(ids name label files without their extension, and macOS and Windows disks "
                                 "ignore case)")
            owners[key] = item["id"]


def _as_list(batch: list) -> list:
    return batch


def process_rank(rank: int | None) -> int:
    """This process's shard: ``rank`` when given by hand, else torchrun's ``RANK`` (0 alone)."""
    return int(os.environ.get("RANK", 0)) if rank is None else int(rank)


def checkpoint_digest(entry) -> str:
    """sha256 of ``entry``'s checkpoint file, which must match the registry's ``checkpoint_sha256`` if given.

    A checkpoint overwritten after the sweep would silently label with a model whose AUROCs are
    not the ones recorded; the digest also tells a resumed run whether the weights changed.
    """
    path = Path(entry.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint of classifier {entry.name!r} not found")
    digest = file_sha256(path)
    if entry.checkpoint_sha256 and digest != entry.checkpoint_sha256:
        raise ValueError(f"{path}: sha256 differs from checkpoint_sha256 in the classifier registry")
    return digest


def load_classifier(entry, device: torch.device) -> torch.nn.Module:
    """Build ``entry.arch`` and load its checkpoint with ``weights_only=True``; errors name the file.

    Check the file with ``checkpoint_digest`` first (``LabelRunner`` does, once per checkpoint).
    """
    from cxrdoll.networks import build_classifier, load_network_weights

    model = build_classifier(entry.arch)
    load_network_weights(model, Path(entry.checkpoint), model_name=entry.arch)
    return model.to(device).eval()


class LabelRunner:
    """Label every image of a classification datalist with one explainer (DoLL or a baseline).

    Args:
        classifiers: ``classifiers.json`` (docs/FORMATS.md).
        datalist: classification datalist JSON; items need ``image``, ``id`` and ``raw_label``.
        output_dir: label folder (docs/FORMATS.md "DoLL labels").
        explainer: ``doll_ig`` (tau-selected ensemble), or a single best classifier with ``ig``,
            ``gradcam``, ``gradcampp`` or ``occlusion``.
        explainer_options: keywords for ``cxrdoll.explain.build_explainer``.
        image_size: side of the images fed to the classifiers and of the label maps.
        tau: AUROC threshold for the per-observation model selection (``doll_ig`` only).
        policy, predict_threshold: target policy (see ``cxrdoll.labels.targets``).
        weight_scheme: distillation weights from validation AUROC.
        confidence_power, min_agree, agree_threshold: boosting (see ``cxrdoll.labels.boost``).
        sigma, percentile: smoothing and per-map normalisation.
        binarise_method, binarise_value: ``otsu``, ``top_q`` (value = percent), ``fixed`` (value = threshold).
        save_soft: also store the float16 soft maps.
        sections: datalist sections to label (their split is kept in the output datalist).
        max_items_per_section: label only the first N items of each section (a quick look at label
            quality, or a CPU-sized run); None labels everything.
        batch_size: images per explainer call. 1 keeps every image's result independent of which
            other images share its batch, which the bit-identical resume relies on.
        rank, world_size: this process's shard; read from torchrun's ``RANK``/``WORLD_SIZE`` when None.
        handlers: callables receiving each :class:`LabelResult` (overlays, TensorBoard).
    """

    def __init__(
        self,
        classifiers: str | os.PathLike,
        datalist: str | os.PathLike,
        output_dir: str | os.PathLike,
        explainer: str = "doll_ig",
        explainer_options: dict[str, Any] | None = None,
        image_size: int = 320,
        device: str | torch.device = "cpu",
        tau: float = 0.7,
        policy: str = "positives",
        predict_threshold: float = 0.5,
        weight_scheme: str = "auroc_excess",
        confidence_power: float = 0.0,
        min_agree: int | None = None,
        agree_threshold: float = 0.5,
        sigma: float = 2.0,
        percentile: float = 99.0,
        binarise_method: str = "otsu",
        binarise_value: float | None = None,
        save_soft: bool = True,
        sections: Sequence[str] = ("training", "validation"),
        max_items_per_section: int | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        progress: bool = True,
        handlers: Sequence[Callable[[LabelResult], Any]] = (),
    ) -> None:
        if explainer not in LABELLER_EXPLAINERS:
            raise ValueError(f"unknown explainer {explainer!r}; expected one of {sorted(LABELLER_EXPLAINERS)}")
        for value, allowed, what in (
            (policy, POLICIES, "target policy"),
            (weight_scheme, WEIGHT_SCHEMES, "weight scheme"),
            (binarise_method, METHODS, "binarisation"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {list(allowed)}")
        self.rank = process_rank(rank)
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # a percent for a fraction (70 for 0.7) would quietly leave every observation to one model (tau),
        # every label empty (agree_threshold: maps lie in [0, 1]) or every unlabelled image without targets
        for name, value, what in (("tau", tau, "a validation-AUROC threshold"),
                                  ("agree_threshold", agree_threshold, "a threshold on maps scaled to [0, 1]"),
                                  ("predict_threshold", predict_threshold, "a threshold on predicted probabilities")):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} {value} is {what}: expected a number from 0 to 1")

        self.registry: Registry = load_registry(classifiers)
        self.datalist_path = Path(datalist)
        self.max_items_per_section = None if max_items_per_section is None else int(max_items_per_section)
        self.sections = self._read_sections(self.datalist_path, sections, self.max_items_per_section)
        self.output_dir = Path(output_dir)
        self.explainer = explainer
        self.explainer_options = dict(explainer_options or {})
        self.image_size = checked_image_size(image_size)
        self.device = torch.device(device)
        self.tau = float(tau)
        self.policy = policy
        self.predict_threshold = float(predict_threshold)
        self.weight_scheme = weight_scheme
        self.confidence_power = float(confidence_power)
        self.min_agree = None if min_agree is None else int(min_agree)
        self.agree_threshold = float(agree_threshold)
        self.sigma = float(sigma)
        self.percentile = float(percentile)
        self.binarise_method = binarise_method
        self.binarise_value = binarise_value
        self.save_soft = bool(save_soft)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.progress = bool(progress)
        self.handlers = list(handlers)

        explain_name, per_observation = LABELLER_EXPLAINERS[explainer]
        self.explain_name = explain_name
        if per_observation:
            self.selection = select_models(self.registry, self.tau)
        else:
            self.selection = single_model_selection(self.registry, best_overall(self.registry))
        self.used = sorted({k for ks in self.selection.values() for k in ks})
        for k in self.used:
            entry = self.registry.classifiers[k]
            if entry.image_size and entry.image_size != self.image_size:
                logger.warning("%s was trained at %d px and is explained at %d px (image_size): its validation AUROC, "
                               "which selected it, was measured at %d px", entry.name, entry.image_size,
                               self.image_size, entry.image_size)
        self._models: dict[int, torch.nn.Module] = {}
        self._explainers: dict[int, Any] = {}

    @staticmethod
    def _read_sections(path: Path, sections: Sequence[str], limit: int | None = None) -> dict[str, list[dict]]:
        doc = read_json(path)
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a MONAI datalist object")
        absent = [name for name in sections if name not in doc]
        others = sorted(k for k, v in doc.items() if k not in sections and isinstance(v, list) and v
                        and all(isinstance(item, dict) for item in v))  # item lists, not 'observations'/'classes'
        if absent and others:  # a misspelt section ('valid') labelled nothing of it, silently
            raise ValueError(f"{path}: no section {absent[0]!r}; it has {others} besides the sections asked for "
                             f"({list(sections)}): check --sections")
        out = {}
        for name in sections:
            items = doc.get(name, [])
            if not isinstance(items, list):
                raise ValueError(f"{path}: section {name!r} is not a list")
            for i, item in enumerate(items):
                if not isinstance(item, dict) or "image" not in item or "id" not in item:
                    raise ValueError(f"{path}: {name}[{i}] needs 'image' and 'id'")
            out[name] = absolute_images(path, name, items if limit is None else items[:limit])
        if not any(out.values()):
            raise ValueError(f"{path}: no items in sections {list(sections)}")
        if not any("raw_label" in item for items in out.values() for item in items):  # each would be skipped
            kind, found = item_kind(next(item for items in out.values() for item in items))
            like = f" (its first item {found}" + (f": {DATALIST_KINDS[kind][0]})" if kind else ")")
            name, _, source = DATALIST_KINDS["classification"]
            raise ValueError(f"{path}: no item has 'raw_label'{like}; the labeller takes {name} with the raw labels "
                             f"(1/0/-1/blank) in 'raw_label': {source}")
        _check_label_names(path, out)
        return out

    # ----------------------------------------------------------------------------------- setup
    @cached_property
    def _digests(self) -> dict[int, str]:
        """Checkpoint sha256 of each used classifier: retrained weights change label content."""
        return {k: checkpoint_digest(self.registry.classifiers[k]) for k in self.used}

    def settings(self) -> dict[str, Any]:
        """Everything that changes label content, as JSON reads it back: a resumed run must use the same."""
        return as_json({
            "explainer": self.explainer,
            "explain_name": self.explain_name,
            "explainer_options": self.explainer_options,
            "image_size": self.image_size,
            "tau": self.tau,
            "policy": self.policy,
            "predict_threshold": self.predict_threshold,
            "weight_scheme": self.weight_scheme,
            "confidence_power": self.confidence_power,
            "min_agree": self.min_agree,
            "agree_threshold": self.agree_threshold,
            "sigma": self.sigma,
            "percentile": self.percentile,
            "binarise": {"method": self.binarise_method, "value": self.binarise_value},
            "save_soft": self.save_soft,
            "max_items_per_section": self.max_items_per_section,
            "classifiers": [
                {"name": self.registry.classifiers[k].name, "arch": self.registry.classifiers[k].arch,
                 "checkpoint": self.registry.classifiers[k].checkpoint, "sha256": self._digests[k],
                 "auroc": without_nan(self.registry.classifiers[k].auroc)}
                for k in self.used
            ],
            "selection": {obs: [self.registry.classifiers[k].name for k in ks] for obs, ks in self.selection.items()},
        })

    def _check_settings(self) -> bool:
        """Refuse to resume into a folder labelled with different settings (mixed labels are silent poison).

        Returns whether the folder has recorded its settings yet: ``run`` records them with its first
        label, so a run that fails before writing one (a setting only checked on the first image)
        leaves nothing behind that would refuse the corrected run.
        """
        path = self.output_dir / SHARD_DIR / "settings.json"
        if not path.exists():
            return False
        previous = read_json(path)
        current = self.settings()
        if previous != current:
            changed = sorted(k for k in current if previous.get(k) != current.get(k))
            raise ValueError(
                f"{self.output_dir}: holds labels made with different settings (differ in {changed}); "
                f"use a new output_dir or empty this one (its labels and {SHARD_DIR}/)"
            )
        return True

    def _record_settings(self) -> None:
        write_json_atomic(self.output_dir / SHARD_DIR / "settings.json", self.settings())

    def _check_sources(self, labelled: Sequence[dict]) -> None:
        """Refuse labels made from other images than the datalist now names under their ids.

        Re-ingested or regenerated images keep their ids, so a label file existing says nothing
        about its pixels; its source record does. Size and modification time decide: a path alone
        that differs is the same file reached another way (moved with its times, a symlinked root).
        Labels without a record (written before records were kept) and images now missing (nothing
        to compare) are trusted, as before. Refused, not relabelled: a wrong datalist would
        otherwise silently overwrite finished labels.
        """
        recorded = read_sources(self.output_dir)
        changed = []
        for item in labelled:
            before = recorded.get(item["id"])
            if before is None:
                continue
            try:
                now = image_source(item["image"])
            except FileNotFoundError:
                continue
            if any(before[k] != now[k] for k in SOURCE_IDENTITY):
                changed.append((label_path(self.output_dir, item["id"]), before, now))
        if changed:
            raise ValueError(_changed_sources_message(self.output_dir, changed))

    def _load(self) -> None:
        self._digests  # every used checkpoint verified (hashed once per run) before one is loaded
        for k in self.used:
            if k not in self._models:
                from cxrdoll.explain import build_explainer

                self._models[k] = load_classifier(self.registry.classifiers[k], self.device)
                self._explainers[k] = build_explainer(self.explain_name, self._models[k], **self.explainer_options)

    def shard_items(self) -> list[dict]:
        """This rank's items: every ``world_size``-th item of all sections, in datalist order."""
        everything = [item for items in self.sections.values() for item in items]
        return everything[self.rank :: self.world_size]

    # ----------------------------------------------------------------------------------- labelling
    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """Each used classifier's sigmoid outputs ``(B, 14)`` on the batch."""
        x = images.to(self.device)
        return {k: torch.sigmoid(self._models[k](x).float()).cpu() for k in self.used}

    def label_batch(self, images: torch.Tensor, raws: Sequence[Sequence[float | None]]) -> list[tuple]:
        """``(soft (14,S,S) float32, mask (14,S,S) uint8, state (14,) int8)`` per image."""
        self._load()
        probs = self.probabilities(images)
        ensemble = torch.stack([probs[k] for k in self.used]).mean(0)
        states = [
            label_state(raw, self.policy, ensemble[i].tolist(), self.predict_threshold) for i, raw in enumerate(raws)
        ]
        # Per classifier, the targets it explains on each image; one explainer call covers them all.
        maps: dict[tuple[int, int, int], torch.Tensor] = {}  # (image, observation, model) -> soft map
        for k in self.used:
            per_image = [[c for c in target_indices(s) if k in self.selection.get(OBSERVATIONS[c], ())] for s in states]
            if not any(per_image):
                continue
            attributions = self._explainers[k].attribute(images.to(self.device), per_image)
            for i, (cs, raw_maps) in enumerate(zip(per_image, attributions)):
                if not cs:
                    continue
                raw_maps = raw_maps.detach().float().cpu()
                if not torch.isfinite(raw_maps).all():
                    raise ValueError(
                        f"classifier {self.registry.classifiers[k].name!r} gave a non-finite {self.explain_name} map "
                        f"for {[OBSERVATIONS[c] for c in cs]} (an fp16 overflow? try amp_dtype bfloat16 or none): "
                        "no label is written from it"
                    )
                soft = postprocess(raw_maps, self.sigma, self.percentile)
                for c, m in zip(cs, soft):
                    maps[(i, c, k)] = m

        size = images.shape[-1]
        results = []
        for i, state in enumerate(states):
            soft = np.zeros((len(OBSERVATIONS), size, size), dtype=np.float32)
            mask = np.zeros((len(OBSERVATIONS), size, size), dtype=np.uint8)
            for c in target_indices(state):
                ks = self.selection[OBSERVATIONS[c]]
                stack = torch.stack([maps[(i, c, k)] for k in ks])
                aurocs = [self.registry.classifiers[k].skill(OBSERVATIONS[c]) for k in ks]
                skill = skill_weights(aurocs, self.weight_scheme)
                p = torch.tensor([float(probs[k][i, c]) for k in ks])
                fused = boost(stack, skill, p, self.confidence_power, self.min_agree, self.agree_threshold)
                soft[c] = fused.numpy()
                mask[c] = binarise(fused, self.binarise_method, self.binarise_value).numpy().astype(np.uint8)
            results.append((soft, mask, state))
        return results

    def run(self) -> dict[str, Any]:
        """Label this rank's unfinished images; finalise the folder if every rank is done."""
        settings_recorded = self._check_settings()
        shard_path(self.output_dir, self.rank, self.world_size).unlink(missing_ok=True)  # not finished until it is
        sources = sources_path(self.output_dir, self.rank, self.world_size)
        trim_torn_source(sources)
        items = self.shard_items()
        labelled = [label_path(self.output_dir, item["id"]).exists() for item in items]
        # after the record's removal: a refused shard's old record must not let another rank finalise
        self._check_sources([item for item, done in zip(items, labelled) if done])
        todo = [item for item, done in zip(items, labelled) if not done]
        logger.info(
            "rank %d/%d: %d images, %d already labelled, explainer %s with %d classifier(s)",
            self.rank, self.world_size, len(items), len(items) - len(todo), self.explainer, len(self.used),
        )
        skipped: list[dict[str, str]] = []
        written = 0
        targeted = np.zeros(len(OBSERVATIONS), dtype=np.int64)  # positive channels written, and empty ones
        empty = np.zeros(len(OBSERVATIONS), dtype=np.int64)
        loader = DataLoader(
            _Inputs(todo, self.image_size), batch_size=self.batch_size, num_workers=self.num_workers,
            collate_fn=_as_list, shuffle=False,
        )
        with tqdm(total=len(items), initial=len(items) - len(todo), unit="img", disable=not self.progress,
                  desc=f"label rank {self.rank}", smoothing=0.1, bar_format=_BAR_FORMAT) as bar:
            for batch in loader:
                good = [s for s in batch if "error" not in s]
                for s in batch:
                    if "error" in s:
                        logger.warning("skipping %s: %s", s["item"]["id"], s["error"])
                        skipped.append({"id": s["item"]["id"], "image": s["item"]["image"], "reason": s["error"]})
                if good:
                    images = torch.stack([s["image"] for s in good])
                    for s, (soft, mask, state) in zip(good, self.label_batch(images, [s["raw"] for s in good])):
                        if not settings_recorded:
                            self._record_settings()
                            settings_recorded = True
                        if not written:
                            record_code_version(self.output_dir)
                        append_source(sources, s["item"]["id"], s["source"])
                        write_label(label_path(self.output_dir, s["item"]["id"]), mask, state,
                                    soft if self.save_soft else None)
                        written += 1
                        targeted += state == 1
                        empty += (state == 1) & ~mask.reshape(len(mask), -1).any(axis=1)
                        result = LabelResult(s["item"]["id"], s["image"], soft, mask, state)
                        for handler in self.handlers:
                            handler(result)
                bar.update(len(batch))
        for handler in self.handlers:
            if hasattr(handler, "close"):
                handler.close()
        if not settings_recorded and len(todo) < len(items):  # labels from before settings were recorded
            self._record_settings()
        warn_no_targets(written, targeted, self.policy)
        warn_empty_positives(targeted, empty)
        write_shard_record(self.output_dir, self.rank, self.world_size, skipped)
        finalised = finalise(self.output_dir, self.sections, self.world_size, self.manifest())
        summary = {"rank": self.rank, "world_size": self.world_size, "images": len(items),
                   "written": written, "skipped": len(skipped), "empty_positive_masks": int(empty.sum()),
                   "finalised": finalised}
        logger.info("rank %d done: %s", self.rank, summary)
        return summary

    def manifest(self) -> dict[str, Any]:
        return {
            "observations": list(OBSERVATIONS),
            "classifiers_json": str(self.registry.path),
            "data_hash": self.registry.data_hash,
            "datalist": str(self.datalist_path),
            "models": [
                {"name": e.name, "arch": e.arch, "checkpoint": e.checkpoint, "auroc": without_nan(e.auroc),
                 "mean_auroc": without_nan(e.mean_auroc)}
                for k, e in enumerate(self.registry.classifiers) if k in self.used
            ],
            **self.settings(),
            "world_size": self.world_size,
        }
