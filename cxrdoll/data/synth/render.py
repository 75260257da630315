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

from .anatomy import SIDE_SIGN, SIDES, Anatomy, clavicle_centre


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


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise with unit-ish std: a ``cells`` x ``cells`` grid upsampled to ``size``."""
    coarse = _smooth3(rng.standard_normal((cells, cells), dtype=np.float32), wrap=(True, True))
    coarse /= coarse.std() + 1e-6
    return upsample(coarse, size)


def _smooth3(a: np.ndarray, wrap: tuple[bool, bool]) -> np.ndarray:
    """A [1, 2, 1] / 4 smoothing along both axes (wrapped or edge-clamped): cheap on small grids."""
    for axis, periodic in enumerate(wrap):
        if periodic:
            a = 0.5 * a + 0.25 * (np.roll(a, 1, axis) + np.roll(a, -1, axis))
        else:
            pad = np.concatenate([a.take([0], axis), a, a.take([-1], axis)], axis)
            n = a.shape[axis]
            a = 0.5 * a + 0.25 * (pad.take(range(0, n), axis) + pad.take(range(2, n + 2), axis))
    return a


def blur(mask: np.ndarray, sigma_norm: float) -> np.ndarray:
    """Gaussian blur, sigma a fraction of the image size.

    Blurs wider than about two pixels run on a copy halved (2x2 means) until sigma is about one
    pixel there, then are upsampled back: the result is smooth anyway, and blurs are much of the
    cost of a phantom.
    """
    size = mask.shape[0]
    sigma = sigma_norm * size
    small = mask.astype(np.float32)
    factor = 1
    while sigma / (2 * factor) >= 0.8 and small.shape[0] % 2 == 0 and small.shape[0] >= 16:
        small = 0.25 * (small[0::2, 0::2] + small[1::2, 0::2] + small[0::2, 1::2] + small[1::2, 1::2])
        factor *= 2
    small = ndimage.gaussian_filter(small, max(sigma / factor, 0.3), truncate=2.5, mode="nearest")
    return small if factor == 1 else upsample(small, size)


def render_base(anat: Anatomy, rng: np.random.Generator) -> Scene:
    """Soft tissue, lungs with vascular markings, spine, ribs and clavicles."""
    p, size = anat.params, anat.size
    Y, X = anat.Y, anat.X
    # Dense organs and air columns, blurred once together.
    f = np.float32
    organs = f(0.10) * anat.heart + f(0.12) * (anat.below_diaphragm & (anat.body > 0.2)) + f(0.04) * anat.mediastinum
    trachea = (np.abs(X - p.cx) < p.trachea_w) & (Y < p.carina_y) & (Y > p.apex_y - 0.12)
    organs -= f(0.10) * trachea
    if p.gastric_bubble > 0:
        gx = p.cx + 0.6 * p.lung_w
        gy = p.cp_y["L"] - p.dome_rise["L"] + 0.035 + p.gastric_bubble
        bubble = ((X - gx) / (1.8 * p.gastric_bubble)) ** 2 + ((Y - gy) / p.gastric_bubble) ** 2 < 1
        organs -= f(0.12) * (bubble & anat.below_diaphragm)
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
    """Exposure, quantum noise, detector blur and tone curve: attenuation layers -> uint8 image."""
    a = scene.soft - scene.air * scene.air_gain + scene.vessels * scene.vessel_gain + scene.bones + scene.extra
    lo = rng.uniform(0.15, 0.28)
    hi = rng.uniform(1.25, 1.45)
    v = (a - lo) * np.float32(1.0 / (hi - lo))
    size = v.shape[0]
    noise = rng.uniform(0.008, 0.03) * min(1.0, (size / 256) ** 0.5)  # smaller images average more quanta
    v += noise * (0.3 + np.clip(v, 0, 1)) * rng.standard_normal(v.shape, dtype=np.float32)
    v = ndimage.gaussian_filter(v, rng.uniform(0.4, 0.8) * size / 256, truncate=2.0)
    # Tone curve as a lookup table (a per-pixel power is the costliest step otherwise).
    levels = np.linspace(0.0, 1.0, 4096, dtype=np.float32) ** np.float32(rng.uniform(0.8, 1.2))
    lut = (levels * 255.0 + 0.5).astype(np.uint8)
    return lut[(np.clip(v, 0.0, 1.0) * 4095.0 + 0.5).astype(np.intp)]


@lru_cache(maxsize=8)
def _polar(n: int) -> dict[str, np.ndarray]:
    """Radius-only and angle fields on a ``2n x 2n`` grid of offsets, sliced per hilum.

    Sliced rather than recomputed per image: arctan2 and exp over the grid would otherwise be
    most of the cost of the vessel markings.
    """
    c = np.arange(-n, n, dtype=np.float32) / n
    dy, dx = c[:, None], c[None, :]
    r = np.sqrt(dx * dx + dy * dy)
    fields = {
        "r": r,
        "theta": (np.arctan2(dy, dx) + np.pi) / (2 * np.pi),
        "radial": np.sqrt(r / 0.6),
        "inv_width": (r + 0.1) / (0.45 * 0.1),
        "amp": 0.15 * np.exp(-r / 0.22) + 0.015,
        "hilar": 0.09 * np.exp(-((r / 0.05) ** 2)),
        "fade": 0.05 + 0.06 * np.exp(-r / 0.15),
    }
    for f in fields.values():
        f.setflags(write=False)
    return fields


def _vessels(anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Branching markings radiating from each hilum: zero-crossings of noise in polar coordinates.

    Drawn at half resolution and upsampled: markings are soft, and this halves the cost.
    """
    size = anat.size
    half = max(size // 2, 16)
    polar = _polar(half)
    out = np.zeros((half, half), np.float32)
    fade = None
    n_theta, n_r = 30, 5
    for s in SIDES:
        hx, hy = anat.hilum(s)
        px, py = int(np.clip(round(hx * half), 0, half)), int(np.clip(round(hy * half), 0, half))
        c0, c1 = (0, half // 2 + half // 16) if s == "R" else (half // 2 - half // 16, half)
        rows = slice(half - py, 2 * half - py)
        cols = slice(half - px + c0, half - px + c1)
        field = _smooth3(_smooth3(rng.standard_normal((n_theta, n_r), dtype=np.float32), (True, False)), (True, False))
        field /= field.std() + 1e-6
        ti, ri = polar["theta"][rows, cols] * n_theta, polar["radial"][rows, cols] * (n_r - 1)
        g = ndimage.map_coordinates(field, [ti.ravel(), ri.ravel()], order=1, mode="grid-wrap").reshape(ti.shape)
        g *= polar["inv_width"][rows, cols]
        out[:, c0:c1] += np.exp(-g * g) * polar["amp"][rows, cols] + polar["hilar"][rows, cols]
        side_fade = polar["fade"][rows, half - px:2 * half - px]
        fade = side_fade if fade is None else np.maximum(fade, side_fade)
    # Peripheral markings: curvy zero-crossings of isotropic noise, fading away from the hila.
    worms = smooth_noise(rng, half, max(6, half // 7)) * np.float32(1 / 0.25)
    out += np.exp(-worms * worms) * fade
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
    bodies = (0.92 + 0.08 * wave**2) * top
    pedicles = np.exp(-(((d - 0.7) / 0.15) ** 2)) * (np.clip(wave, 0, 1) ** 6 * top)
    return 0.08 * band * bodies + 0.03 * pedicles


def stamp_bands(size: int, cols: np.ndarray, centre: np.ndarray, half: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Draw many thin curved bones at once, column by column, as bands with bright cortices.

    Each of the ``(N, C)`` entries is one column ``cols`` of one curve: centre height and half
    thickness (normalised), and a weight (0 where the curve does not reach). Only the few pixels
    each column covers are computed and summed with ``bincount``, so thirty-odd ribs cost about
    what one full-image operation does.
    """
    use = weight > 0
    cols, centre, half, weight = cols[use], centre[use], half[use], weight[use]
    if not len(cols):
        return np.zeros((size, size), np.float32)
    reach = int(np.ceil(half.max() * size)) + 1
    offsets = np.arange(-reach, reach + 1)
    rows = np.floor(centre * size).astype(np.intp)[:, None] + offsets  # (pairs, offsets)
    d = ((rows + 0.5) * (1.0 / size) - centre[:, None]) / half[:, None]
    value = np.maximum(1.0 - d * d, 0.0) * (0.45 + 0.55 * np.sqrt(np.abs(d))) * weight[:, None]
    ok = (rows >= 0) & (rows < size) & (value > 0)
    flat = (rows * size + cols[:, None])[ok]
    return np.bincount(flat, weights=value[ok], minlength=size * size).reshape(size, size).astype(np.float32)


def _ribs(anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """All ribs in one stamp: per-column centrelines, tapered ends, fractures as gaps and steps."""
    p, size = anat.params, anat.size
    strength = {"posterior": rng.uniform(0.11, 0.16), "anterior": rng.uniform(0.05, 0.08)}
    col = lambda values: np.array(values, np.float32)[:, None]  # noqa: E731  one row per rib
    ribs = anat.ribs
    sign = col([SIDE_SIGN[r.side] for r in ribs])
    x = (np.arange(size, dtype=np.float32) + 0.5) / size
    t = sign * (x - p.cx) / p.lung_w  # (ribs, columns)
    centre = col([r.y0 for r in ribs]) + t * (col([r.a for r in ribs]) + col([r.b for r in ribs]) * t)
    t0, t1 = col([r.t0 for r in ribs]), col([r.t1 for r in ribs])
    weight = np.clip((t - t0) / 0.06, 0, 1) * np.clip((t1 - t) / 0.06, 0, 1) * col([strength[r.kind] for r in ribs])
    for br in p.rib_breaks:
        i = next(k for k, r in enumerate(ribs) if (r.side, r.index, r.kind) == (br.side, br.index, "posterior"))
        tb = br.u / p.lung_w
        centre[i] += br.step * (t[i] > tb)
        weight[i] *= np.clip((np.abs(t[i] - tb) - br.gap / p.lung_w) / 0.01, 0, 1)
    cols = np.broadcast_to(np.arange(size), t.shape)
    half = np.broadcast_to(col([r.half_thick for r in ribs]), t.shape)
    return stamp_bands(size, cols, centre, half, weight)


def _clavicles(anat: Anatomy) -> np.ndarray:
    p, size = anat.params, anat.size
    u0, u1 = p.med_w * 0.4, p.lung_w + p.wall + 0.03
    x = (np.arange(size) + 0.5) / size
    cols, centres, halves, weights = [], [], [], []
    for s in SIDES:
        t = (SIDE_SIGN[s] * (x - p.cx) - u0) / (u1 - u0)
        cols.append(np.arange(size))
        centres.append(clavicle_centre(p, t))
        halves.append(0.013 + 0.004 * np.abs(np.cos(np.pi * t)))
        weights.append(0.14 * (t > 0) * np.clip((1 - t) / 0.05, 0, 1))
    return stamp_bands(size, np.stack(cols), np.stack(centres), np.stack(halves), np.stack(weights))
