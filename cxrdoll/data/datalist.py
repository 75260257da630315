"""Read and write MONAI datalist JSON files, with errors that name the file, list and item."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.io import read_json, write_text_atomic


def write_datalist(path: str | os.PathLike, datalist: Mapping[str, Any]) -> None:
    """Atomic write, one item per line: readable and diffable, where ``indent=2`` would put every
    label value on a line of its own and fall back to json's slow pure-Python encoder."""
    sections = {k: [json.dumps(item) for item in v] for k, v in datalist.items() if _is_item_list(v)}
    meta = {k: v for k, v in datalist.items() if k not in sections}
    write_text_atomic(path, format_datalist(meta, sections))


def _is_item_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def format_datalist(meta: Mapping[str, Any], sections: Mapping[str, Sequence[str]]) -> str:
    """Datalist JSON text: ``meta`` entries, then each section's already-encoded items, one per line."""
    parts = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in meta.items()]
    for key, lines in sections.items():
        body = "[\n    " + ",\n    ".join(lines) + "\n  ]" if lines else "[]"
        parts.append(f"  {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def load_datalist(path: str | os.PathLike, sections: Sequence[str] = ("training",), keys: Sequence[str] = ("image",)) -> dict:
    """A datalist whose ``sections`` are lists of dicts that each hold ``keys``."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a datalist must be a JSON object with {', '.join(map(repr, sections))} lists")
    for section in sections:
        if section not in data:
            raise ValueError(f"{path}: no {section!r} list (found keys {sorted(data)})")
        items = data[section]
        if not isinstance(items, list):
            raise ValueError(f"{path}: {section!r} must be a list, not {type(items).__name__}")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"{path}: {section}[{i}] must be an object, not {type(item).__name__}")
            absent = [k for k in keys if k not in item]
            if absent:
                raise ValueError(f"{path}: {section}[{i}] has no {', '.join(map(repr, absent))}")
    return data


# Each stage's datalist, by the ``label`` of its items: what it is, which bundle reads it and where one comes from.
DATALIST_KINDS: dict[str, tuple[str, str, str]] = {
    "classification": ("a classification datalist", "cxr_classifier", "'python -m cxrdoll prepare-chexpert' writes one"),
    "doll": ("a DoLL label datalist", "cxr_seg_pretrain", "the LABELS/datalist.json that cxr_doll_labeller writes"),
    "downstream": ("a downstream segmentation datalist", "cxr_seg_adapter",
                   "'label' is one mask file per class; 'python -m cxrdoll seg-datalist' writes one"),
}


def item_kind(item: Mapping[str, Any]) -> tuple[str | None, str]:
    """Which kind of ``DATALIST_KINDS`` an item belongs to (None: no kind), and what shows it."""
    label = item.get("label")
    if "label_mask" in item:
        return "classification", "has 'label_mask'"
    if isinstance(label, list) and label and all(isinstance(v, (int, float)) for v in label):
        return "classification", f"has a 'label' of {len(label)} numbers"
    if isinstance(label, str) and label.lower().endswith(".npz"):
        return "doll", "has a 'label' that is one .npz label file"
    if isinstance(label, str) and label:
        return "downstream", "has a 'label' that is one mask file"
    if isinstance(label, list) and label and all(isinstance(v, str) and v for v in label):
        return "downstream", f"has a 'label' of {len(label)} mask file{'s' * (len(label) != 1)}"
    return None, "has no 'label'" if label is None else f"has a 'label' that is not a file path: {label!r:.80}"


def check_item_kinds(path: str | os.PathLike, section: str, items: Sequence[Mapping[str, Any]], wanted: str) -> None:
    """Refuse a section holding an item of another kind than ``wanted``, naming the first such item.

    Another stage's datalist otherwise failed deep inside a bundle with a TypeError (a classification
    label's numbers joined to a folder), or after training had started (a mask list read as a DoLL label).
    """
    name, reader, source = DATALIST_KINDS[wanted]
    for i, item in enumerate(items):
        kind, found = item_kind(item)
        if kind == wanted:
            continue
        where = f"{section}[{i}]" + (f" (id {item['id']!r})" if "id" in item else "")
        like = f", so it looks like {DATALIST_KINDS[kind][0]} (for {DATALIST_KINDS[kind][1]})" if kind else ""
        raise ValueError(f"{path}: {where} {found}{like}; {reader} takes {name}: {source}")


def absolute_files(item: Mapping[str, Any], base: Path, keys: Sequence[str]) -> dict[str, Any]:
    """``item`` with the relative paths under ``keys`` (one path, or a list) joined to ``base``, the
    datalist's folder, as MONAI's ``load_decathlon_datalist`` resolves them (not against the working
    directory). An absolute path stays as written: image caches and the labeller's source records
    are keyed on it."""
    out = dict(item)
    for key in keys:
        value = out.get(key)
        if isinstance(value, (list, tuple)):
            out[key] = [v if os.path.isabs(v) else str(base / v) for v in value]
        elif value:
            out[key] = value if os.path.isabs(value) else str(base / value)
    return out


def absolute_images(path: str | os.PathLike, section: str, items: Sequence[dict]) -> list[dict]:
    """``items`` of a classification datalist with their ``image`` made absolute (``absolute_files``)."""
    base = Path(path).resolve().parent
    for i, item in enumerate(items):
        if not isinstance(item["image"], str) or not item["image"]:
            raise ValueError(f"{path}: {section}[{i}].image must be a file path, got {item['image']!r}")
    return [absolute_files(item, base, ("image",)) for item in items]


def load_classification_datalist(path: str | os.PathLike) -> dict:
    """A classification datalist (docs/FORMATS.md): 14 observations in order, 0/1 labels and masks,
    relative image paths made absolute (``absolute_images``)."""
    data = load_datalist(path, ("training", "validation"), ("image",))
    for section in ("training", "validation"):
        check_item_kinds(path, section, data[section], "classification")
    if data.get("observations") != list(OBSERVATIONS):
        raise ValueError(f"{path}: 'observations' must be the 14 CheXpert observations in order {list(OBSERVATIONS)}")
    for section in ("training", "validation"):
        for i, item in enumerate(data[section]):
            for key in ("label", "label_mask"):
                values = item.get(key)
                if not isinstance(values, list) or len(values) != len(OBSERVATIONS) or any(v not in (0, 1) for v in values):
                    raise ValueError(f"{path}: {section}[{i}].{key} must be {len(OBSERVATIONS)} values of 0 or 1, got {values!r}")
        data[section] = absolute_images(path, section, data[section])
    return data


class PackedItems(SequenceABC):
    """Datalist items (JSON values) packed into one byte array; each access decodes a fresh dict.

    Forked DataLoader workers share the parent's memory until they write to it, and reading a list of
    dicts writes to it (reference counts): the labeller's workers each gained 1.7 KB per item they
    loaded, 370 MB apiece over 224K items. One numpy array has no per-item objects to touch. Used by
    the labeller and the image-cache build; for training, ``cxrdoll.data.classification.CompactItems``
    keeps only the keys training reads.
    """

    def __init__(self, items: Sequence[Mapping[str, Any]]) -> None:
        blobs = [json.dumps(item, separators=(",", ":")).encode() for item in items]
        self._ends = np.cumsum([len(blob) for blob in blobs], dtype=np.int64)
        self._data = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index):  # int -> dict; slice -> list of dicts
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # negative indices, and IndexError past the end
        start = int(self._ends[index - 1]) if index else 0
        return json.loads(self._data[start : int(self._ends[index])].tobytes())
