"""Tiny segmentation data for bundle and experiment tests: DoLL labels and a two-class downstream set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrdoll.constants import OBSERVATIONS, observation_index
from cxrdoll.data.datalist import write_datalist
from cxrdoll.io import save_npz_atomic, save_png_atomic


def _disc(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def write_tiny_doll(root: Path, n_train: int = 4, n_val: int = 2, size: int = 32, seed: int = 0) -> Path:
    """Images with a bright disc on odd items; Cardiomegaly labels it (state 1) or is negative (state 0),
    Edema is ignored (state -1), every other observation is negative."""
    rng = np.random.default_rng(seed)
    cardio, edema = observation_index("Cardiomegaly"), observation_index("Edema")
    sections: dict[str, list] = {"training": [], "validation": []}
    for section, count in (("training", n_train), ("validation", n_val)):
        for i in range(count):
            disc = _disc(size, size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3), size / 5)
            image = rng.integers(0, 80, size=(size, size)).astype(np.uint8)
            positive = i % 2 == 1
            if positive:
                image[disc] += 150
            mask = np.zeros((len(OBSERVATIONS), size, size), np.uint8)
            state = np.zeros(len(OBSERVATIONS), np.int8)
            state[edema] = -1
            if positive:
                mask[cardio] = disc
                state[cardio] = 1
            save_png_atomic(root / "images" / f"{section}_{i}.png", image)
            save_npz_atomic(root / "labels" / f"{section}_{i}.npz", mask=mask, state=state)
            sections[section].append(
                {"image": f"images/{section}_{i}.png", "label": f"labels/{section}_{i}.npz", "id": f"{section}_{i}.png"}
            )
    path = root / "datalist.json"
    write_datalist(path, sections)
    return path


def write_tiny_downstream(root: Path, n_train: int = 6, n_val: int = 2, size: int = 32, seed: int = 0) -> Path:
    """Two classes: a bright disc ("blob") and a bright bar ("bar"), one mask file per class."""
    rng = np.random.default_rng(seed)
    sections: dict[str, list] = {"training": [], "validation": []}
    for section, count in (("training", n_train), ("validation", n_val)):
        for i in range(count):
            blob = _disc(size, rng.uniform(8, size - 8), rng.uniform(8, size / 2), 4)
            bar = np.zeros((size, size), bool)
            c = int(rng.integers(size // 2 + 2, size - 4))
            bar[4 : size - 4, c : c + 3] = True
            image = rng.integers(0, 60, size=(size, size)).astype(np.uint8)
            image[blob | bar] += 160
            name = f"{section}_{i}"
            save_png_atomic(root / "images" / f"{name}.png", image)
            save_png_atomic(root / "masks" / "blob" / f"{name}.png", blob.astype(np.uint8) * 255)
            save_png_atomic(root / "masks" / "bar" / f"{name}.png", bar.astype(np.uint8) * 255)
            sections[section].append(
                {"image": f"images/{name}.png", "label": [f"masks/blob/{name}.png", f"masks/bar/{name}.png"], "id": name}
            )
    path = root / "datalist.json"
    write_datalist(path, {"classes": ["blob", "bar"], **sections})
    return path
