"""Read and write MONAI datalist JSON files, with errors that name the file, list and item."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

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


def load_classification_datalist(path: str | os.PathLike) -> dict:
    """A classification datalist (docs/FORMATS.md): 14 observations in order, 0/1 labels and masks."""
    data = load_datalist(path, ("training", "validation"), ("image", "label", "label_mask"))
    if data.get("observations") != list(OBSERVATIONS):
        raise ValueError(f"{path}: 'observations' must be the 14 CheXpert observations in order {list(OBSERVATIONS)}")
    for section in ("training", "validation"):
        for i, item in enumerate(data[section]):
            for key in ("label", "label_mask"):
                values = item[key]
                if not isinstance(values, list) or len(values) != len(OBSERVATIONS) or any(v not in (0, 1) for v in values):
                    raise ValueError(f"{path}: {section}[{i}].{key} must be {len(OBSERVATIONS)} values of 0 or 1, got {values!r}")
    return data
