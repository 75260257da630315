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
from scipy import special

from .anatomy import SIDE_SIGN, SIDES, Anatomy, clavicle_centre, grid


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
def _interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower neighbour and weight of the upper one, for linear interpolation of ``n_in`` to ``n_out`` cell centres."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    return lo, (pos - lo).astype(np.float32)


def _lerp(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` as ``a[lo] + w * (a[lo + 1] - a[lo])``: two gathers, no BLAS
    (its threads stall on busy CPUs). The step past the last cell is 0, where the weight is 0 anyway."""
    lo, w = _interp_weights(n_out, a.shape[axis])
    step = np.zeros_like(a)
    if axis == 0:
        np.subtract(a[1:], a[:-1], out=step[:-1])
    else:
        np.subtract(a[:, 1:], a[:, :-1], out=step[:, :-1])
    out = a.take(lo, axis)
    step = step.take(lo, axis)
    step *= w if axis == 1 else w[:, None]
    out += step
    return out


def _double(a: np.ndarray, axis: int) -> np.ndarray:
    """Exact 2x linear upsampling along ``axis``, edge cells repeated.

    Each cell becomes two: itself minus and plus a quarter of the step to its neighbour before and
    after. Steps are taken on the flattened array, so every operation is one contiguous loop
    (strided 2-D slices cost several times more); steps that would cross an edge are zeroed.
    """
    n, m = a.shape
    shift = m if axis == 0 else 1
    flat = a.ravel()
    step = np.empty(n * m + shift, np.float32)
    np.subtract(flat[shift:], flat[:-shift], out=step[shift:n * m])
    if axis == 0:
        step[:m] = step[n * m:] = 0
    else:
        step[::m] = 0  # row starts, and the end
    step *= np.float32(0.25)
    rows, width = (n, m) if axis == 0 else (n * m, 1)
    cells = flat.reshape(rows, width)
    out = np.empty((rows, 2, width), np.float32)
    np.subtract(cells, step[:n * m].reshape(rows, width), out=out[:, 0])
    np.add(cells, step[shift:].reshape(rows, width), out=out[:, 1])
    return out.reshape((2 * n, m) if axis == 0 else (n, 2 * m))


def upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling (cell centres aligned) to ``size`` x ``size``, float32; columns first, on the small grid."""
    coarse = coarse.astype(np.float32, copy=False)
    if coarse.shape == (size // 2, size // 2) and size % 2 == 0:
        return _double(_double(coarse, 1), 0)
    return _lerp(_lerp(coarse, size, 1), size, 0)


def halve(a: np.ndarray) -> np.ndarray:
    """2x2 means as float32 (an odd last row or column is repeated): the first step of every cheap blur.

    Rows are added first (contiguous), and booleans as bytes, so a mask costs no float copy.
    """
    if a.shape[0] % 2:
        a = np.concatenate([a, a[-1:]], 0)
    if a.shape[1] % 2:
        a = np.concatenate([a, a[:, -1:]], 1)
    if a.dtype == bool:
        a = a.view(np.uint8)
    rows = a[0::2] + a[1::2]
    return np.multiply(rows[:, 0::2] + rows[:, 1::2], np.float32(0.25), dtype=np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise with unit-ish std: a ``cells`` x ``cells`` grid upsampled to ``size``."""
    coarse = _smooth3(rng.standard_normal((cells, cells), dtype=np.float32), wrap=(True, True))
    return upsample(_unit_std(coarse), size)


def _unit_std(a: np.ndarray) -> np.ndarray:
    """Divide ``a`` in place by its standard deviation (+1e-6), with bare reductions: ``ndarray.std``'s
    Python overhead was a visible cost on these small grids."""
    flat = a.ravel()
    centred = flat - np.add.reduce(flat) / flat.size
    a /= np.sqrt(np.add.reduce(centred * centred) / flat.size) + np.float32(1e-6)
    return a


@lru_cache(maxsize=64)
def _neighbours(n: int, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices of each cell's previous and next neighbour along an axis of ``n`` cells (wrapped or clamped)."""
    i = np.arange(n)
    if periodic:
        return (i - 1) % n, (i + 1) % n
    return np.maximum(i - 1, 0), np.minimum(i + 1, n - 1)


def _smooth3(a: np.ndarray, wrap: tuple[bool, bool]) -> np.ndarray:
    """A [1, 2, 1] / 4 smoothing along both axes (wrapped or edge-clamped): cheap on small grids."""
    for axis, periodic in enumerate(wrap):
        before, after = _neighbours(a.shape[axis], periodic)
        a = np.float32(0.5) * a + np.float32(0.25) * (a.take(before, axis) + a.take(after, axis))
    return a


@lru_cache(maxsize=64)
def _gauss_taps(sigma: float, truncate: float) -> tuple[np.float32, ...]:
    """Centre and one side of ndimage's normalised Gaussian kernel (radius ``int(truncate * sigma + 0.5)``)."""
    w = np.exp(-0.5 * (np.arange(int(truncate * sigma + 0.5) + 1) / sigma) ** 2)
    return tuple(np.float32(v) for v in w / (2 * w.sum() - w[0]))


def _shift_sum(flat: np.ndarray, taps: tuple[np.float32, ...], step: int, length: int,
               out: np.ndarray | None = None) -> np.ndarray:
    """``sum_i taps[i] * (flat[x - i*step] + flat[x + i*step])`` for ``length`` points from ``r*step`` on."""
    c = (len(taps) - 1) * step
    out = np.multiply(flat[c:c + length], taps[0], out=out)
    pair = np.empty(length, np.float32)
    for i in range(1, len(taps)):
        np.add(flat[c - i * step:c - i * step + length], flat[c + i * step:c + i * step + length], out=pair)
        pair *= taps[i]
        out += pair
    return out


def gaussian(a: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    """Separable Gaussian filter, edges repeated (ndimage's "nearest"), as float32.

    Each pass sums shifted slices of a flattened, edge-padded copy (a row's overrun lands in the
    padding), so every operation runs over contiguous memory: several times faster than ndimage's
    line buffers for the short kernels used here.
    """
    taps = _gauss_taps(float(sigma), truncate)
    r = len(taps) - 1
    a = a.astype(np.float32, copy=r == 0)
    if r == 0:
        return a
    n, m = a.shape
    wide = np.concatenate([a[:, :1].repeat(r, 1), a, a[:, -1:].repeat(r, 1)], 1).ravel()
    across = np.empty((n, m + 2 * r), np.float32)
    _shift_sum(wide, taps, 1, wide.size - 2 * r, out=across.ravel()[:-2 * r])
    across = across[:, :m]
    tall = np.concatenate([across[:1].repeat(r, 0), across, across[-1:].repeat(r, 0)]).ravel()
    return _shift_sum(tall, taps, m, n * m).reshape(n, m)


def blur(mask: np.ndarray, sigma_norm: float) -> np.ndarray:
    """Gaussian blur, sigma a fraction of the image size.

    Blurs wider than about two pixels run on a copy halved (2x2 means) until sigma is about one
    pixel there, then are upsampled back: the result is smooth anyway, and blurs are much of the
    cost of a phantom.
    """
    size = mask.shape[0]
    sigma = sigma_norm * size
    small, factor = mask, 1
    while sigma / (2 * factor) >= 0.8 and small.shape[0] % 2 == 0 and small.shape[0] >= 16:
        small = halve(small)
        factor *= 2
    small = gaussian(small, max(sigma / factor, 0.3), truncate=2.5)
    return small if factor == 1 else upsample(small, size)


def render_base(anat: Anatomy, rng: np.random.Generator) -> Scene:
    """Soft tissue, lungs with vascular markings, spine, ribs and clavicles.

    The lung layers are smooth, so they are built on a half-resolution grid and each upsampled once.
    """
    p, size = anat.params, anat.size
    soft = _soft_tissue(anat, rng)
    lungs = halve(anat.lung["R"] | anat.lung["L"])
    half = lungs.shape[0]
    lung_soft = blur(lungs, 0.01)
    depth = np.sqrt(blur(lungs, 0.06).clip(0, 1))
    height = np.clip((grid(half)[0] - p.apex_y) / (p.cp_y["R"] - p.apex_y), 0, 1)
    # Lower zones sit behind more soft tissue (breasts, pectorals): less air contrast there.
    air = rng.uniform(0.34, 0.44) * lung_soft
    air *= 0.5 + 0.5 * depth
    air *= 1 - 0.25 * height**2
    air *= 1.0 + 0.06 * smooth_noise(rng, half, 6)
    vessels = _vessels(anat, rng, half)
    vessels += 0.02 * smooth_noise(rng, half, max(8, size // 5))
    vessels *= lung_soft
    bones = _spine(anat, rng)
    bands = zip(_ribs(anat, rng), _clavicles(anat))  # ribs and clavicles in one stamp
    bones += stamp_bands(size, *(np.concatenate(parts) for parts in bands))
    zeros = np.zeros((size, size), np.float32)

    def full(a: np.ndarray) -> np.ndarray:  # an odd size was padded by a row and column: crop, don't stretch
        return upsample(a, 2 * half)[:size, :size]

    return Scene(soft, full(air), full(vessels), bones, zeros, np.ones_like(zeros), np.ones_like(zeros), full(lung_soft))


def _soft_tissue(anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Body thickness, with dense organs and air columns blurred once together, and the humeral heads."""
    p = anat.params
    Y, X = anat.Y, anat.X
    f = np.float32
    organs = f(0.10) * anat.heart + f(0.12) * (anat.below_diaphragm & (anat.body > 0.2)) + f(0.04) * anat.mediastinum
    trachea = (np.abs(X - p.cx) < p.trachea_w) & (Y < p.carina_y) & (Y > p.apex_y - 0.12)
    organs -= f(0.10) * trachea
    if p.gastric_bubble > 0:
        gx = p.cx + 0.6 * p.lung_w
        gy = p.cp_y["L"] - p.dome_rise["L"] + 0.035 + p.gastric_bubble
        bubble = ((X - gx) / (1.8 * p.gastric_bubble)) ** 2 + ((Y - gy) / p.gastric_bubble) ** 2 < 1
        organs -= f(0.12) * (bubble & anat.below_diaphragm)
    soft = anat.body * f(rng.uniform(0.85, 1.0))
    soft += blur(organs, 0.007)
    for s in SIDES:  # humeral heads in the upper corners, drawn only in their own box
        hx, hy, radius = p.cx + SIDE_SIGN[s] * (p.lung_w + p.wall + 0.06), p.apex_y - 0.01, 0.07
        rows, cols = anat.window(hx, hy, radius, radius)
        head = np.clip(1 - ((X[:, cols] - hx) ** 2 + (Y[rows] - hy) ** 2) / radius**2, 0, 1)
        soft[rows, cols] += 0.25 * np.sqrt(head)
    return soft


def compose(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Exposure, quantum noise, detector blur and tone curve: attenuation layers -> uint8 image."""
    v = scene.air * scene.air_gain
    np.subtract(scene.soft, v, out=v)
    v += scene.vessels * scene.vessel_gain
    v += scene.bones
    v += scene.extra
    lo = rng.uniform(0.15, 0.28)
    hi = rng.uniform(1.25, 1.45)
    v -= lo
    v *= np.float32(1.0 / (hi - lo))
    size = v.shape[0]
    noise = rng.uniform(0.008, 0.03) * min(1.0, (size / 256) ** 0.5)  # smaller images average more quanta
    v += noise * (0.3 + np.clip(v, 0, 1)) * normal_noise(rng, v.shape)
    v = gaussian(v, rng.uniform(0.4, 0.8) * size / 256, truncate=2.0)
    # Tone curve as a lookup table (a per-pixel power is the costliest step otherwise).
    lut = np.exp(_log_levels() * np.float32(rng.uniform(0.8, 1.2)))
    lut = (lut * 255.0 + 0.5).astype(np.uint8)
    np.clip(v, 0.0, 1.0, out=v)
    v *= 4095.0
    v += 0.5
    return lut.take(v.astype(np.uint16))


@lru_cache(maxsize=1)
def _log_levels() -> np.ndarray:
    """Logarithms of the tone curve's 4096 input levels: a power law is then one exp (log 0 = -inf -> 0)."""
    with np.errstate(divide="ignore"):
        return np.log(np.linspace(0.0, 1.0, 4096, dtype=np.float32))


@lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """Standard normal quantiles at the mid-points of 65536 equal-probability bins."""
    return special.ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)


def normal_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Gaussian noise (clipped at 4.3 sigma) as a lookup of 16-bit uniform draws: a third of the
    cost of ``standard_normal``, which was the costliest step of :func:`compose`."""
    return _normal_quantiles().take(rng.integers(0, 65536, shape, dtype=np.uint16))


# Vessel markings: a noise field over (angle, radius) around each hilum, wrapped along both axes.
N_THETA, N_R = 30, 5


@lru_cache(maxsize=8)
def _polar(n: int) -> dict[str, np.ndarray]:
    """Fields on a ``2n x 2n`` grid of offsets, sliced per hilum: radius-only profiles and, for the
    polar noise field, the four flat indices and weights of each pixel's bilinear lookup.

    Sliced rather than recomputed per image: arctan2, exp and the lookup geometry over the grid
    would otherwise be most of the cost of the vessel markings.
    """
    c = np.arange(-n, n, dtype=np.float32) / n
    dy, dx = c[:, None], c[None, :]
    r = np.sqrt(dx * dx + dy * dy)
    theta = (np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * N_THETA
    radial = np.sqrt(r / 0.6) * (N_R - 1)
    t0, r0 = np.floor(theta), np.floor(radial)
    ft, fr = theta - t0, radial - r0
    t0, r0 = t0.astype(np.intp), r0.astype(np.intp)
    rows = [t0 % N_THETA * N_R, (t0 + 1) % N_THETA * N_R]
    cols = [r0 % N_R, (r0 + 1) % N_R]
    fields = {
        "taps": np.stack([rows[i] + cols[j] for i in (0, 1) for j in (0, 1)]),
        "tap_weights": np.stack([(1 - ft) * (1 - fr), (1 - ft) * fr, ft * (1 - fr), ft * fr]).astype(np.float32),
        "inv_width": (r + 0.1) / (0.45 * 0.1),
        "amp": 0.15 * np.exp(-r / 0.22) + 0.015,
        "hilar": 0.09 * np.exp(-((r / 0.05) ** 2)),
        "fade": 0.05 + 0.06 * np.exp(-r / 0.15),
    }
    for f in fields.values():
        f.setflags(write=False)
    return fields


def _vessels(anat: Anatomy, rng: np.random.Generator, half: int) -> np.ndarray:
    """Branching markings radiating from each hilum: zero-crossings of noise in polar coordinates.

    Drawn on the ``half`` x ``half`` grid of the lung layers: markings are soft.
    """
    polar = _polar(half)
    out = np.zeros((half, half), np.float32)
    fade = None
    for s in SIDES:
        hx, hy = anat.hilum(s)
        px, py = min(max(round(hx * half), 0), half), min(max(round(hy * half), 0), half)
        c0, c1 = (0, half // 2 + half // 16) if s == "R" else (half // 2 - half // 16, half)
        rows = slice(half - py, 2 * half - py)
        cols = slice(half - px + c0, half - px + c1)
        field = _smooth3(_smooth3(rng.standard_normal((N_THETA, N_R), dtype=np.float32), (True, False)), (True, False))
        _unit_std(field)
        taps = field.ravel().take(polar["taps"][:, rows, cols])
        taps *= polar["tap_weights"][:, rows, cols]
        g = taps.sum(axis=0)
        g *= polar["inv_width"][rows, cols]
        out[:, c0:c1] += np.exp(-g * g) * polar["amp"][rows, cols] + polar["hilar"][rows, cols]
        side_fade = polar["fade"][rows, half - px:2 * half - px]
        fade = side_fade if fade is None else np.maximum(fade, side_fade)
    # Peripheral markings: curvy zero-crossings of isotropic noise, fading away from the hila.
    worms = smooth_noise(rng, half, max(6, half // 7)) * np.float32(1 / 0.25)
    out += np.exp(-worms * worms) * fade
    return out


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
    cols, centre, half, weight = (x[use].astype(np.float32, copy=False) for x in (cols, centre, half, weight))
    if not len(cols):
        return np.zeros((size, size), np.float32)
    reach = int(np.ceil(half.max() * size)) + 1
    # Row indices as float32 (exact below 2**24), so nothing is promoted to float64.
    rows = np.floor(centre * size)[:, None] + np.arange(-reach, reach + 1, dtype=np.float32)  # (pairs, offsets)
    d = (rows + np.float32(0.5)) * np.float32(1 / size) - centre[:, None]
    d *= (1 / half)[:, None]
    ok = (np.abs(d) < 1) & (rows >= 0) & (rows < size)
    d = d[ok]
    value = (1 - d * d) * (np.float32(0.45) + np.float32(0.55) * np.sqrt(np.abs(d)))
    value *= np.broadcast_to(weight[:, None], ok.shape)[ok]
    flat = (rows * size + cols[:, None])[ok].astype(np.intp)
    return np.bincount(flat, weights=value, minlength=size * size).reshape(size, size).astype(np.float32)


Bands = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # stamp_bands' cols, centre, half, weight


def _ribs(anat: Anatomy, rng: np.random.Generator) -> Bands:
    """All ribs as bands: per-column centrelines, tapered ends, fractures as gaps and steps."""
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
    return cols, centre, half, weight


def _clavicles(anat: Anatomy) -> Bands:
    p, size = anat.params, anat.size
    u0, u1 = p.med_w * 0.4, p.lung_w + p.wall + 0.03
    x = (np.arange(size, dtype=np.float32) + 0.5) / size
    cols, centres, halves, weights = [], [], [], []
    for s in SIDES:
        t = (SIDE_SIGN[s] * (x - p.cx) - u0) / (u1 - u0)
        cols.append(np.arange(size))
        centres.append(clavicle_centre(p, t))
        halves.append(0.013 + 0.004 * np.abs(np.cos(np.pi * t)))
        weights.append(0.14 * (t > 0) * np.clip((1 - t) / 0.05, 0, 1))
    return np.stack(cols), np.stack(centres), np.stack(halves), np.stack(weights)
