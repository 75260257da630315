"""A tiny, fully local labelling set-up: a few PNG phantoms, a datalist and a classifiers.json.

Classifiers are randomly initialised ``densenet_tiny`` networks saved as state_dicts; the
registry's AUROCs are chosen so that tau = 0.7 selects two models for Cardiomegaly, one for
Edema, and none (fallback to the best single model) for the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.networks import build_classifier

CARDIO = OBSERVATIONS.index("Cardiomegaly")
EDEMA = OBSERVATIONS.index("Edema")
EFFUSION = OBSERVATIONS.index("Pleural Effusion")


def make_images(root: Path, n: int, size: int = 40, seed: int = 0) -> list[dict]:
    """``n`` greyscale PNGs with a bright disc, and datalist items with varied raw labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    items = []
    for i in range(n):
        cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < (size // 6) ** 2
        pixels = (rng.uniform(40, 90, (size, size)) + 120 * disc).clip(0, 255).astype(np.uint8)
        rel = f"tiny/patient{i:05d}/study1/view1_frontal.png"
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        raw: list[float | None] = [None] * len(OBSERVATIONS)
        raw[CARDIO] = 1.0
        raw[EDEMA] = 1.0 if i % 2 == 0 else 0.0
        raw[EFFUSION] = -1.0 if i % 3 == 0 else 0.0
        items.append({"image": str(path.resolve()), "id": rel, "patient": f"patient{i:05d}",
                      "raw_label": raw})
    return items


def write_datalist(root: Path, items: list[dict], n_validation: int = 1) -> Path:
    path = root / "datalist.json"
    doc = {"observations": list(OBSERVATIONS), "root": str(root),
           "training": items[: len(items) - n_validation], "validation": items[len(items) - n_validation :]}
    path.write_text(json.dumps(doc))
    return path


def write_classifiers(root: Path, arch: str = "densenet_tiny") -> Path:
    """Two random classifiers and their registry."""
    entries = []
    aurocs = [
        {"Cardiomegaly": 0.9, "Edema": 0.8, "Pleural Effusion": 0.6},
        {"Cardiomegaly": 0.8, "Edema": 0.65, "Pleural Effusion": 0.62},
    ]
    for k, auroc in enumerate(aurocs):
        torch.manual_seed(k)
        model = build_classifier(arch)
        ckpt = root / f"model{k}.pt"
        torch.save(model.state_dict(), ckpt)
        full = {obs: auroc.get(obs, 0.55) for obs in OBSERVATIONS}
        entries.append({"name": f"{arch}_{k}", "arch": arch, "checkpoint": str(ckpt.resolve()), "image_size": 40,
                        "auroc": full, "mean_auroc": float(np.mean(list(auroc.values())))})
    path = root / "classifiers.json"
    path.write_text(json.dumps({"observations": list(OBSERVATIONS), "data_hash": "test", "classifiers": entries}))
    return path


def tiny_setup(root: Path, n: int = 4, size: int = 40) -> tuple[Path, Path]:
    """(classifiers.json, datalist.json) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    items = make_images(root, n, size)
    return write_classifiers(root), write_datalist(root, items)
