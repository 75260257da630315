"""Overlay PNG: the radiograph in grey with each segment filled in its own colour, for quick review."""

from __future__ import annotations

import os

import numpy as np

from cxrdoll.io import save_png_atomic

# Distinct colours (matplotlib's tab10), cycled when there are more segments.
PALETTE = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
    dtype=np.float32,
)


def overlay_rgb(image: np.ndarray, masks: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """uint8 ``(H, W, 3)``: ``image`` (H, W) in [0, 1] blended with ``masks`` (N, H, W)."""
    grey = np.clip(image, 0.0, 1.0)[..., None] * 255.0
    rgb = np.repeat(grey, 3, axis=-1)
    for index, mask in enumerate(np.asarray(masks, dtype=bool)):
        colour = PALETTE[index % len(PALETTE)]
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * colour
    return np.rint(rgb).astype(np.uint8)


def save_overlay(path: str | os.PathLike, image: np.ndarray, masks: np.ndarray) -> None:
    save_png_atomic(path, overlay_rgb(image, masks))
