"""Lateral view of the same chest (patient facing image left): anatomy only.

CheXpert studies often hold a lateral view beside the frontal one, so the layout carries a few.
Only anatomy-level findings carried by the shared parameters show here (an enlarged heart); other
findings are not drawn and lateral views have no truth masks — the pipeline trains and evaluates on
frontal views (see docs/FORMATS.md).
"""

from __future__ import annotations

import numpy as np

from .anatomy import AnatomyParams, grid, pow_11_32
from .render import Scene, blur, compose, smooth_noise


def make_lateral(rng: np.random.Generator, size: int, p: AnatomyParams) -> np.ndarray:
    """Render a lateral radiograph whose heights (apex, diaphragm) and heart size follow ``p``."""
    Y, X = grid(size)
    depth = 0.3 + 0.5 * (p.lung_w - 0.36)  # half the chest's front-to-back diameter
    cx = 0.5 + rng.uniform(-0.02, 0.02)
    front, back = cx - depth, cx + depth
    body = pow_11_32(np.clip(1 - ((X - cx) / (depth + 0.07)) ** 2, 0, 1)) * (Y > p.apex_y - 0.25)
    # Diaphragm: higher in front, lowest at the posterior costophrenic sulcus.
    frac = np.clip((X - front) / (back - front), 0, 1)
    dome = p.cp_y["R"] - 0.09 + 0.11 * frac**2
    top = p.apex_y + 0.02
    lung = (((X - cx - 0.01) / (0.85 * depth)) ** 2 + ((Y - (top + 0.4)) / 0.42) ** 2 < 1) & (Y < dome) & (Y > top)
    s = p.heart_scale
    hx, hy = front + 0.05 + 0.12 * s, p.cp_y["R"] - 0.07 - 0.11 * s
    heart = (((X - hx) / (0.13 * s)) ** 2 + ((Y - hy) / (0.12 * s)) ** 2 < 1) & (Y < dome + 0.01)
    spine_x = back - 0.07 + 0.02 * np.sin(np.pi * np.clip(Y, 0, 1))  # thoracic kyphosis
    spine = np.abs(X - spine_x) < 0.035
    vertebrae = np.cos(2 * np.pi * Y / (p.rib_spacing * 0.95)) > -0.75
    sternum = (np.abs(X - (front + 0.025 + 0.04 * Y)) < 0.008) & (Y > p.apex_y + 0.06) & (Y < p.heart_top + 0.12)
    trachea = (np.abs(X - (cx + 0.1 * (Y - p.carina_y))) < p.trachea_w) & (Y < p.carina_y)

    organs = 0.12 * (Y > dome) * (body > 0.3) - 0.1 * trachea + 0.06 * heart
    soft = body * rng.uniform(0.95, 1.1) + blur(organs.astype(np.float32), 0.01)
    lung_soft = blur(lung & ~heart, 0.015)
    air = rng.uniform(0.3, 0.38) * lung_soft * (1 + 0.06 * smooth_noise(rng, size, 6)) + 0.12 * blur(lung & heart, 0.015)
    vessels = 0.04 * np.exp(-((smooth_noise(rng, size, max(6, size // 8)) / 0.3) ** 2)) * lung_soft
    bones = 0.1 * blur(spine & vertebrae, 0.006) + 0.03 * blur(spine, 0.004) + 0.1 * blur(sternum, 0.003)
    zeros = np.zeros((size, size), np.float32)
    scene = Scene(soft.astype(np.float32), air.astype(np.float32), vessels.astype(np.float32),
                  bones.astype(np.float32), zeros, np.ones_like(zeros), np.ones_like(zeros), lung_soft)
    return compose(scene, rng)
