"""Which classifiers explain which observation: read ``classifiers.json`` and apply the tau rule.

DoLL explains an observation only with models that are good at it on validation data
(``AUROC_k,c >= tau``); when none is, the best single model for that observation stands in, so
every observation still gets a label.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from cxrdoll.constants import LOCALISABLE_OBSERVATIONS, OBSERVATIONS
from cxrdoll.io import read_json


@dataclass(frozen=True)
class ClassifierEntry:
    """One trained classifier as listed in ``classifiers.json``."""

    name: str
    arch: str
    checkpoint: str
    image_size: int
    auroc: dict[str, float] = field(default_factory=dict)
    mean_auroc: float = float("nan")
    checkpoint_sha256: str | None = None

    def skill(self, observation: str) -> float:
        """Validation AUROC for ``observation``; NaN when unknown (e.g. no positives in validation)."""
        value = self.auroc.get(observation)
        return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class Registry:
    observations: tuple[str, ...]
    classifiers: tuple[ClassifierEntry, ...]
    data_hash: str = ""
    path: str = ""


def load_registry(path: str | os.PathLike) -> Registry:
    """Parse and check ``classifiers.json`` (format in docs/FORMATS.md); errors name the file."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("classifiers"), list):
        raise ValueError(f"{path}: expected an object with a 'classifiers' list")
    observations = tuple(doc.get("observations", OBSERVATIONS))
    if observations != OBSERVATIONS:
        raise ValueError(f"{path}: observations {list(observations)} differ from cxrdoll.constants.OBSERVATIONS")
    if not doc["classifiers"]:
        raise ValueError(f"{path}: 'classifiers' is empty")
    entries = []
    for i, item in enumerate(doc["classifiers"]):
        _check_entry(path, i, item)
        auroc = {str(k): (float("nan") if v is None else float(v)) for k, v in item.get("auroc", {}).items()}
        unknown = sorted(set(auroc) - set(OBSERVATIONS))
        if unknown:
            raise ValueError(f"{path}: classifiers[{i}] ({item['name']}) has AUROC for unknown observations {unknown}")
        checkpoint = Path(item["checkpoint"])
        if not checkpoint.is_absolute():  # relative paths are relative to the registry file
            checkpoint = path.parent / checkpoint
        entries.append(
            ClassifierEntry(
                name=str(item["name"]),
                arch=str(item["arch"]),
                checkpoint=str(checkpoint),
                image_size=int(item.get("image_size", 0)) or _recorded_size(checkpoint),
                auroc=auroc,
                mean_auroc=float("nan") if item.get("mean_auroc") is None else float(item["mean_auroc"]),
                checkpoint_sha256=item.get("checkpoint_sha256"),
            )
        )
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: classifier names are not unique: {names}")
    return Registry(observations, tuple(entries), str(doc.get("data_hash", "")), str(path))


def _recorded_size(checkpoint: Path) -> int:
    """The size the classifier bundle recorded beside the checkpoint (0 if none), for hand-written
    entries without ``image_size``: a 64 px model was otherwise explained at 320 px, unwarned."""
    from cxrdoll.engines.recorder import trained_setting

    try:
        return int(trained_setting(checkpoint, "image_size", 0) or 0)
    except (ValueError, TypeError):  # an unreadable record beside it: as if there were none
        return 0


# the classifier bundle's default, for registries that record neither training size
DEFAULT_IMAGE_SIZE = 320


def trained_size(path: str | os.PathLike) -> int:
    """The image size the registry's classifiers were trained at: the labeller's default, so that
    they explain images at the scale their validation AUROC (and selection) was measured at."""
    registry = load_registry(path)
    sizes = {e.image_size for e in registry.classifiers if e.image_size}
    if len(sizes) > 1:
        trained = ", ".join(f"{e.name} {e.image_size} px" for e in registry.classifiers if e.image_size)
        raise ValueError(f"{path}: the classifiers were trained at different sizes ({trained}); "
                         "choose the labelling size with --image_size")
    return sizes.pop() if sizes else DEFAULT_IMAGE_SIZE


def _check_entry(path: Path, i: int, item: object) -> None:
    """Field types of one registry entry, so a hand-edited ``classifiers.json`` fails naming the
    entry and field instead of deep inside the conversion."""
    if not isinstance(item, dict):
        raise ValueError(f"{path}: classifiers[{i}] must be an object, not {type(item).__name__}")
    missing = [k for k in ("name", "arch", "checkpoint") if k not in item]
    if missing:
        raise ValueError(f"{path}: classifiers[{i}] lacks {missing}")
    where = f"{path}: classifiers[{i}] ({item['name']!r})"
    for key in ("name", "arch", "checkpoint"):
        if not isinstance(item[key], str) or not item[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string, got {item[key]!r}")
    if item.get("checkpoint_sha256") is not None and not isinstance(item["checkpoint_sha256"], str):
        raise ValueError(f"{where}: 'checkpoint_sha256' must be a string, got {item['checkpoint_sha256']!r}")
    if not _is_int(item.get("image_size", 0)):
        raise ValueError(f"{where}: 'image_size' must be a whole number, got {item['image_size']!r}")
    if not _is_number_or_null(item.get("mean_auroc")):
        raise ValueError(f"{where}: 'mean_auroc' must be a number or null, got {item['mean_auroc']!r}")
    auroc = item.get("auroc", {})
    if not isinstance(auroc, dict) or not all(_is_number_or_null(v) for v in auroc.values()):
        raise ValueError(f"{where}: 'auroc' must be an object of observation: number or null, got {auroc!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number_or_null(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _nan_to_neg(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def best_overall(registry: Registry) -> int:
    """Index of the classifier with the highest mean AUROC (first on ties), for single-model explainers."""
    return max(range(len(registry.classifiers)), key=lambda k: (_nan_to_neg(registry.classifiers[k].mean_auroc), -k))


def _check_observations(observations: object) -> None:
    """A misspelt name has no AUROC anywhere and silently fell back to the best overall model; a
    string was read letter by letter."""
    if isinstance(observations, str):
        raise TypeError(f"observations must be a sequence of names, got the string {observations!r} "
                        f"(one observation: ({observations!r},))")
    unknown = [o for o in observations if o not in OBSERVATIONS]
    if unknown:
        raise ValueError(f"unknown observation(s) {unknown}; expected names of cxrdoll.constants.OBSERVATIONS "
                         f"{list(OBSERVATIONS)}")


def best_for(registry: Registry, observation: str) -> int:
    """Index of the best classifier for one observation; the best overall when none has an AUROC for it."""
    _check_observations([observation])
    skills = [_nan_to_neg(e.skill(observation)) for e in registry.classifiers]
    if all(s == -math.inf for s in skills):
        return best_overall(registry)
    return max(range(len(skills)), key=lambda k: (skills[k], -k))


def select_models(
    registry: Registry, tau: float, observations: tuple[str, ...] = LOCALISABLE_OBSERVATIONS
) -> dict[str, list[int]]:
    """``{observation: [classifier indices]}`` with ``AUROC >= tau``, else ``[best single model]``."""
    _check_observations(observations)
    selection = {}
    for obs in observations:
        chosen = [k for k, e in enumerate(registry.classifiers) if e.skill(obs) >= tau]
        selection[obs] = chosen if chosen else [best_for(registry, obs)]
    return selection


def single_model_selection(
    registry: Registry, index: int, observations: tuple[str, ...] = LOCALISABLE_OBSERVATIONS
) -> dict[str, list[int]]:
    """Every observation explained by one classifier (the single-model baselines)."""
    _check_observations(observations)
    return {obs: [index] for obs in observations}
