"""A tiny classification datalist written to a temp folder: random PNGs with a learnable finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrdoll.constants import OBSERVATIONS, observation_index
from cxrdoll.data.datalist import write_datalist
from cxrdoll.io import save_png_atomic


def write_tiny_datalist(root: Path, n_train: int = 16, n_val: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Images where Cardiomegaly is a bright disc; Edema is uncertain (masked) on every image.

    Labels alternate so that both classes appear in each split; Fracture is always negative,
    so its validation AUROC is undefined (one class only).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    cardio, edema = observation_index("Cardiomegaly"), observation_index("Edema")
    sections: dict[str, list] = {"training": [], "validation": []}
    for section, count in (("training", n_train), ("validation", n_val)):
        for i in range(count):
            positive = i % 2 == 1
            image = rng.integers(0, 100, size=(size, size)).astype(np.uint8)
            if positive:
                image[disc] += 120
            path = root / "images" / f"{section}_{i:03d}.png"
            save_png_atomic(path, image)
            label = [0.0] * len(OBSERVATIONS)
            mask = [1] * len(OBSERVATIONS)
            raw: list = [0] * len(OBSERVATIONS)
            label[cardio] = float(positive)
            raw[cardio] = int(positive)
            mask[edema], raw[edema] = 0, -1
            sections[section].append(
                {"image": str(path), "id": f"{section}/{i:03d}.png", "patient": f"patient{i:05d}",
                 "label": label, "label_mask": mask, "raw_label": raw}
            )
    path = root / "datalist.json"
    write_datalist(path, {"observations": list(OBSERVATIONS), "policy": {}, "root": str(root), **sections})
    return path
