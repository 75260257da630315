"""Render an :class:`Anatomy` into a radiograph-like image.

The image is built in an attenuation domain (bright = dense) as a sum of layers, so findings can
add density (fluid, nodules, devices) or remove it (pneumothorax air, no vessel markings) without
knowing how the rest was drawn. ``compose`` then applies the exposure, the tone curve, quantum
noise and detector blur.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .anatomy import SIDE_SIGN, SIDES, Anatomy, RibBreak, Rib, clavicle_centre


@dataclass
class Scene:
    """Attenuation layers of one image; findings edit them before :func:`compose`."""

    soft: np.ndarray  # body soft tissue, mediastinum, heart, abdomen
    air: np.ndarray  # lung air, subtracted (scaled by air_gain)
    vessels: np.ndarray  # lung markings (scaled by vessel_gain)
    bones: np.ndarray
    extra: np.ndarray  # what findings add
    air_gain: np.ndarray
    vessel_gain: np.ndarray
    lung_soft: np.ndarray  # blurred union of both lungs, 0..1


@lru_cache(maxsize=32)
def _interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbours and weights for linear interpolation from ``n_in`` to ``n_out`` cell centres."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling to ``size`` x ``size`` by gathering (no BLAS: its threads stall on busy CPUs)."""
    lo, hi, w = _interp_weights(size, coarse.shape[1])
    cols = coarse[:, lo] * (1 - w) + coarse[:, hi] * w  # small: (cells, size)
    lo, hi, w = _interp_weights(size, coarse.shape[0])
    return cols[lo] * (1 - w)[:, None] + cols[hi] * w[:, None]  # row gathers are contiguous copies


def pool(image: np.ndarray, cells: int) -> np.ndarray:
    """Area-average a square image down to ``cells`` x ``cells``."""
    size = image.shape[0]
    starts = np.arange(cells) * size // cells
    counts = np.diff(np.append(starts, size)).astype(np.float32)
    out = np.add.reduceat(np.add.reduceat(image, starts, axis=0), starts, axis=1)
    return out / counts[:, None] / counts[None, :]


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise with unit-ish std: a ``cells`` x ``cells`` grid upsampled to ``size``."""
    coarse = ndimage.gaussian_filter(rng.standard_normal((cells, cells)).astype(np.float32), 0.6, mode="wrap")
    coarse /= coarse.std() + 1e-6
    return upsample(coarse, size)


def blur(mask: np.ndarray, sigma_norm: float) -> np.ndarray:
    """Gaussian blur, sigma a fraction of the image size; wide blurs run on a pooled copy."""
    size = mask.shape[0]
    sigma = sigma_norm * size
    mask = mask.astype(np.float32)
    if sigma < 2.5:
        return ndimage.gaussian_filter(mask, max(sigma, 0.3), truncate=2.5)
    cells = max(8, int(round(size * 1.5 / sigma)))
    if cells >= size:
        return ndimage.gaussian_filter(mask, sigma, truncate=2.5)
    small = ndimage.gaussian_filter(pool(mask, cells), sigma * cells / size, truncate=2.5, mode="nearest")
    return upsample(small, size)


def render_base(anat: Anatomy, rng: np.random.Generator) -> Scene:
    """Soft tissue, lungs with vascular markings, spine, ribs and clavicles."""
    p, size = anat.params, anat.size
    Y, X = anat.Y, anat.X
    # Dense organs and air columns, blurred once together.
    organs = 0.10 * anat.heart + 0.12 * (anat.below_diaphragm & (anat.body > 0.2)) + 0.04 * anat.mediastinum
    trachea = (np.abs(X - p.cx) < p.trachea_w) & (Y < p.carina_y) & (Y > p.apex_y - 0.12)
    organs -= 0.10 * trachea
    if p.gastric_bubble > 0:
        gx = p.cx + 0.6 * p.lung_w
        gy = p.cp_y["L"] - p.dome_rise["L"] + 0.035 + p.gastric_bubble
        bubble = ((X - gx) / (1.8 * p.gastric_bubble)) ** 2 + ((Y - gy) / p.gastric_bubble) ** 2 < 1
        organs -= 0.12 * (bubble & anat.below_diaphragm)
    soft = anat.body * np.float32(rng.uniform(0.85, 1.0)) + blur(organs, 0.007)
    for s in SIDES:  # humeral heads in the upper corners
        hx = p.cx + SIDE_SIGN[s] * (p.lung_w + p.wall + 0.06)
        head = np.clip(1 - ((X - hx) ** 2 + (Y - p.apex_y + 0.01) ** 2) / 0.07**2, 0, 1)
        soft += 0.25 * np.sqrt(head)

    lungs = anat.lung["R"] | anat.lung["L"]
    lung_soft = blur(lungs, 0.01)
    depth = np.sqrt(blur(lungs, 0.06).clip(0, 1))
    height = np.clip((Y - p.apex_y) / (p.cp_y["R"] - p.apex_y), 0, 1)
    # Lower zones sit behind more soft tissue (breasts, pectorals): less air contrast there.
    air = rng.uniform(0.34, 0.44) * lung_soft * (0.5 + 0.5 * depth) * (1 - 0.25 * height**2)
    air *= 1.0 + 0.06 * smooth_noise(rng, size, 6)
    vessels = _vessels(anat, rng) * lung_soft
    vessels += 0.02 * smooth_noise(rng, size, max(8, size // 5)) * lung_soft
    bones = _spine(anat, rng) + _ribs(anat, rng) + _clavicles(anat)
    zeros = np.zeros((size, size), np.float32)
    return Scene(soft.astype(np.float32), air.astype(np.float32), vessels.astype(np.float32),
                 bones.astype(np.float32), zeros, np.ones_like(zeros), np.ones_like(zeros), lung_soft)


def compose(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Exposure, tone curve, noise and blur: attenuation layers -> uint8 image."""
    a = scene.soft - scene.air * scene.air_gain + scene.vessels * scene.vessel_gain + scene.bones + scene.extra
    lo = rng.uniform(0.15, 0.28)
    hi = rng.uniform(1.25, 1.45)
    v = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    v = v ** np.float32(rng.uniform(0.8, 1.2))
    size = v.shape[0]
    noise = rng.uniform(0.008, 0.03) * min(1.0, (size / 256) ** 0.5)  # smaller images average more quanta
    v += noise * (0.3 + v) * rng.standard_normal(v.shape, dtype=np.float32)
    v = ndimage.gaussian_filter(v, rng.uniform(0.4, 0.8) * size / 256, truncate=2.0)
    return (np.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _vessels(anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Branching markings radiating from each hilum: zero-crossings of noise in polar coordinates.

    Drawn at half resolution and upsampled: markings are soft, and this halves the cost.
    """
    size = anat.size
    half = max(size // 2, 16)
    c = (np.arange(half, dtype=np.float32) + 0.5) / half
    Y, X = c[:, None], c[None, :]
    out = np.zeros((half, half), np.float32)
    for s in SIDES:
        hx, hy = anat.hilum(s)
        cols = slice(0, half // 2 + half // 16) if s == "R" else slice(half // 2 - half // 16, half)
        dx = X[:, cols] - hx
        dy = Y - hy
        r = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dy, dx)
        ti = (theta + np.pi) * (1 / (2 * np.pi))
        ri = np.sqrt(r / 0.6)
        for n_theta, n_r, width, amp in ((30, 5, 0.45, 0.15),):
            field = rng.standard_normal((n_theta, n_r)).astype(np.float32)
            field = ndimage.gaussian_filter(field, (1.0, 1.0), mode=("wrap", "nearest"))
            field /= field.std() + 1e-6
            g = ndimage.map_coordinates(field, [(ti * n_theta).ravel(), (ri * (n_r - 1)).ravel()], order=1,
                                        mode="grid-wrap").reshape(r.shape)
            w = width * 0.1 / (r + 0.1)
            out[:, cols] += np.exp(-((g / w) ** 2)) * (amp * np.exp(-r / 0.22) + 0.015)
        out[:, cols] += 0.09 * np.exp(-((r / 0.05) ** 2))
    # Peripheral markings: curvy zero-crossings of isotropic noise, fading away from the hila.
    worms = smooth_noise(rng, half, max(6, half // 7))
    dist = np.minimum(*(np.hypot(X - hx, Y - hy) for hx, hy in (anat.hilum(s) for s in SIDES)))
    out += np.exp(-((worms / 0.25) ** 2)) * (0.05 + 0.06 * np.exp(-dist / 0.15))
    return upsample(out, size)


def _spine(anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Vertebral column: a band with vertebral bodies and pedicles, seen through the mediastinum."""
    p = anat.params
    d = np.abs(anat.X - p.cx) / p.spine_w
    band = np.clip(1.0 - d**4, 0.0, 1.0)
    period = p.rib_spacing * 0.95
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.cos(2 * np.pi * anat.Y / period + phase)
    top = anat.Y > p.apex_y - 0.15
    bodies = (0.88 + 0.12 * wave**2) * top
    pedicles = np.exp(-(((d - 0.7) / 0.15) ** 2)) * (np.clip(wave, 0, 1) ** 6 * top)
    return 0.08 * band * bodies + 0.03 * pedicles


def rib_profile(rib: Rib, u: np.ndarray, y: np.ndarray, lung_w: float, breaks: list[RibBreak]) -> np.ndarray:
    """Bone density of one rib: a band with bright cortices, tapered ends, optional fractures."""
    t = u / lung_w
    centre = rib.y_at(t)
    window = np.clip((t - rib.t0) / 0.06, 0, 1) * np.clip((rib.t1 - t) / 0.06, 0, 1)
    for br in breaks:
        tb = br.u / lung_w
        centre = centre + br.step * (t > tb)
        window = window * np.clip((np.abs(t - tb) - br.gap / lung_w) / 0.01, 0, 1)
    d = (y - centre) / rib.half_thick
    band = np.clip(1.0 - d * d, 0.0, 1.0)
    return band * (0.45 + 0.55 * np.sqrt(np.abs(d))) * window


def rib_rows_cols(rib: Rib, anat: Anatomy, pad: float) -> tuple[slice, slice]:
    """Pixel bounding box of a rib (plus ``pad``), so each rib is drawn on a small window only."""
    p, size = anat.params, anat.size
    vertex = min(max(-rib.a / (2 * rib.b), rib.t0), rib.t1)  # y(t) is a parabola: ends or vertex
    ys = np.array([rib.y_at(rib.t0), rib.y_at(rib.t1), rib.y_at(vertex)])
    r0 = max(int((ys.min() - pad) * size), 0)
    r1 = min(int((ys.max() + pad) * size) + 2, size)
    xs = p.cx + SIDE_SIGN[rib.side] * np.array([rib.t0, rib.t1]) * p.lung_w
    c0 = max(int(xs.min() * size) - 1, 0)
    c1 = min(int(xs.max() * size) + 2, size)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _ribs(anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    p, size = anat.params, anat.size
    out = np.zeros((size, size), np.float32)
    strength = {"posterior": rng.uniform(0.08, 0.12), "anterior": rng.uniform(0.04, 0.07)}
    for rib in anat.ribs:
        breaks = [b for b in p.rib_breaks if (b.side, b.index, "posterior") == (rib.side, rib.index, rib.kind)]
        rows, cols = rib_rows_cols(rib, anat, rib.half_thick + sum(abs(b.step) for b in breaks))
        u = anat.u[rib.side][:, cols]
        out[rows, cols] += strength[rib.kind] * rib_profile(rib, u, anat.Y[rows], p.lung_w, breaks)
    return out


def _clavicles(anat: Anatomy) -> np.ndarray:
    p = anat.params
    out = np.zeros((anat.size, anat.size), np.float32)
    u0, u1 = p.med_w * 0.4, p.lung_w + p.wall + 0.03
    for s in SIDES:
        t = (anat.u[s] - u0) / (u1 - u0)
        d = (anat.Y - clavicle_centre(p, t)) / (0.013 + 0.004 * np.abs(np.cos(np.pi * t)))
        band = np.clip(1.0 - d * d, 0.0, 1.0) * ((t > 0) * np.clip((1 - t) / 0.05, 0, 1))
        out += 0.14 * band * (0.5 + 0.5 * np.sqrt(np.abs(d)))
    return out
