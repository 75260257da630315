"""Lateral view of the same chest (patient facing image left): anatomy only.

CheXpert studies often hold a lateral view beside the frontal one, so the layout carries a few.
Only anatomy-level findings carried by the shared parameters show here (an enlarged heart); other
findings are not drawn and lateral views have no truth masks — the pipeline trains and evaluates on
frontal views (see docs/FORMATS.md).
"""

from __future__ import annotations

import numpy as np

from .anatomy import AnatomyParams, grid
from .render import Scene, blur, compose, smooth_noise


def make_lateral(rng: np.random.Generator, size: int, p: AnatomyParams) -> np.ndarray:
    """Render a lateral radiograph whose heights (apex, diaphragm) and heart size follow ``p``."""
    Y, X = grid(size)
    depth = 0.36 + 0.3 * (p.lung_w - 0.36)  # half AP diameter of the chest
    cx = 0.5 + rng.uniform(-0.02, 0.02)
    body = np.sqrt(np.clip(1 - ((X - cx) / (depth + 0.08)) ** 2, 0, 1)) * (Y > p.apex_y - 0.2)
    front, back = cx - depth, cx + depth
    # Diaphragm: low posteriorly (posterior costophrenic sulcus), higher anteriorly.
    frac = np.clip((X - front) / (back - front), 0, 1)
    dome = p.cp_y["R"] - 0.1 + 0.12 * frac**2
    lung = (Y > p.apex_y + 0.02 * (1 - frac) * 3) & (Y < dome) & (X > front + 0.03) & (X < back - 0.05)
    lung &= ((X - cx) / depth) ** 2 + ((Y - (p.apex_y + dome) / 2) / 0.5) ** 2 < 1.2
    hx, hy = front + 0.2 * p.heart_scale, p.cp_y["L"] - 0.14
    heart = ((X - hx) / (0.15 * p.heart_scale)) ** 2 + ((Y - hy) / (0.13 * p.heart_scale)) ** 2 < 1
    spine_x = back - 0.06 - 0.03 * np.sin(np.pi * np.clip(Y, 0, 1))
    spine = np.abs(X - spine_x) < 0.045
    discs = np.cos(2 * np.pi * Y / (p.rib_spacing * 0.95)) > -0.7
    sternum = (np.abs(X - (front + 0.03 + 0.03 * Y)) < 0.01) & (Y > p.apex_y + 0.05) & (Y < p.heart_top + 0.1)
    trachea = (np.abs(X - (cx - 0.02 + 0.08 * Y)) < p.trachea_w) & (Y < p.carina_y)

    soft = body * rng.uniform(1.0, 1.15) + blur(0.12 * (Y > dome) - 0.1 * trachea + 0.1 * heart, 0.008)
    lung_soft = blur(lung & ~heart, 0.015)
    air = rng.uniform(0.32, 0.4) * lung_soft * (1 + 0.06 * smooth_noise(rng, size, 6))
    vessels = 0.04 * np.exp(-((smooth_noise(rng, size, max(6, size // 8)) / 0.3) ** 2)) * lung_soft
    bones = 0.12 * blur(spine & discs, 0.004) + 0.1 * blur(sternum, 0.004)
    zeros = np.zeros((size, size), np.float32)
    scene = Scene(soft.astype(np.float32), air.astype(np.float32), vessels.astype(np.float32),
                  bones.astype(np.float32), zeros, np.ones_like(zeros), np.ones_like(zeros), lung_soft)
    return compose(scene, rng)
