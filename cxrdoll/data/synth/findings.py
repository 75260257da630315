"""One generator per CheXpert observation: each plants a finding and returns its true mask.

A finding may reshape the anatomy before it is built (``prepare``: a bigger heart, a wider
mediastinum, broken ribs) and then edits the attenuation layers (``plant``). Findings are drawn
where the anatomy says they occur and are sized to be visible at 128 pixels, because the rest of
the pipeline must be able to learn them from image-level labels alone.
"""

from __future__ import annotations

import cmath
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .anatomy import SIDE_SIGN, SIDES, Anatomy, AnatomyParams, RibBreak, lung_borders
from .render import Scene, blur, smooth_noise

Rng = np.random.Generator


@dataclass(frozen=True)
class Finding:
    """``plant(anatomy, scene, rng) -> bool mask``; ``prepare(params, rng)`` edits anatomy first."""

    name: str
    plant: Callable[[Anatomy, Scene, Rng], np.ndarray]
    prepare: Callable[[AnatomyParams, Rng], None] | None = None


def _side(rng: Rng) -> str:
    return SIDES[int(rng.integers(2))]


def _lung_point(anat: Anatomy, side: str, rng: Rng, zone: tuple[float, float] = (0.0, 1.0),
                margin: float = 0.0) -> tuple[float, float]:
    """A random point inside a lung, within a height band (fractions from apex to base)."""
    top, base = anat.lung_bounds(side)
    r0 = max(int((top + zone[0] * (base - top)) * anat.size), 0)
    r1 = min(int((top + zone[1] * (base - top)) * anat.size) + 1, anat.size)
    ys, xs = np.nonzero(anat.lung[side][r0:r1])
    if not len(ys):  # a zone outside a very small lung: fall back to the whole lung
        r0, (ys, xs) = 0, np.nonzero(anat.lung[side])
    ys = ys + r0
    h = (ys + 0.5) / anat.size
    keep = np.ones(len(ys), bool)
    if margin > 0:
        med, lat = lung_borders(anat.params, side, h)
        u = SIDE_SIGN[side] * ((xs + 0.5) / anat.size - anat.params.cx)
        keep &= (u > med + margin) & (u < lat - margin)
    if not keep.any():
        keep = np.ones_like(h, dtype=bool)
    i = rng.choice(np.flatnonzero(keep))
    return (xs[i] + 0.5) / anat.size, (ys[i] + 0.5) / anat.size


def _blob(anat: Anatomy, x: float, y: float, rx: float, ry: float, rng: Rng, rough: float = 0.15,
          out: np.ndarray | None = None) -> np.ndarray:
    """Soft 0..1 field of an ellipse with a lobulated border (angular harmonics of random phase).

    Drawn into ``out`` (a new zero image by default) as a maximum, so clusters of blobs cost their
    windows only. The harmonics ``cos(k * theta + phase)`` are real parts of powers of the unit
    complex direction: no per-pixel arctan2 or cosine.
    """
    weights = [cmath.rect(rng.uniform(0.3, 1.0) / k, rng.uniform(0, 6.3)) for k in (2, 3, 5)]  # amplitude, phase
    out = np.zeros((anat.size, anat.size), np.float32) if out is None else out
    reach = 1.0 + 1.2 * rough
    rows, cols = anat.window(x, y, rx * reach, ry * reach)
    dx, dy = (anat.X[:, cols] - x) / rx, (anat.Y[rows] - y) / ry
    r = np.sqrt(dx * dx + dy * dy)
    unit = (dx + 1j * dy) / np.maximum(r, 1e-6)  # exp(i theta); 0 at the centre, where the blob is 1 anyway
    z2 = unit * unit
    z3 = z2 * unit
    wobble = weights[0] * z2 + weights[1] * z3 + weights[2] * (z3 * z2)
    window = out[rows, cols]
    np.maximum(window, np.clip((1.0 + rough * wobble.real - r) / 0.15, 0.0, 1.0), out=window)
    return out


def _add_density(scene: Scene, field: np.ndarray, density: float, keep_air: float = 0.0) -> None:
    """Fluid or tissue replacing lung air: add density and hide the markings underneath."""
    scene.extra += density * field
    scene.air_gain *= 1.0 - (1.0 - keep_air) * field
    scene.vessel_gain *= 1.0 - 0.8 * field


# ---- cardiomediastinal ------------------------------------------------------------------------

def _prepare_mediastinum(p: AnatomyParams, rng: Rng) -> None:
    p.med_scale = rng.uniform(1.8, 2.3)


def _plant_mediastinum(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    scene.soft += rng.uniform(0.08, 0.12) * blur(anat.mediastinum, 0.015)
    return anat.mediastinum.copy()


def _prepare_heart(p: AnatomyParams, rng: Rng) -> None:
    p.heart_scale = rng.uniform(1.4, 1.6)


def _plant_heart(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    scene.soft += rng.uniform(0.02, 0.05) * blur(anat.heart, 0.01)
    return anat.heart.copy()


# ---- parenchymal opacities --------------------------------------------------------------------

def _plant_lung_opacity(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Ground glass: one or two large, faint, smooth-edged veils, mostly in the upper and mid zones."""
    field = np.zeros_like(scene.extra)
    for _ in range(int(rng.integers(1, 3))):
        side = _side(rng)
        x, y = _lung_point(anat, side, rng, (0.1, 0.7))
        rx = rng.uniform(0.1, 0.15)
        _blob(anat, x, y, rx, rx * rng.uniform(0.8, 1.3), rng, 0.25, out=field)
    field = blur(field, 0.02) * scene.lung_soft
    _add_density(scene, field, rng.uniform(0.03, 0.06), keep_air=0.35)
    return (field > 0.35) & (anat.lung["R"] | anat.lung["L"])


def _plant_lesion(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Nodules (one to three) or a single mass: round, dense, well defined."""
    mask = np.zeros(scene.extra.shape, bool)
    mass = rng.random() < 0.35
    for _ in range(1 if mass else int(rng.integers(1, 4))):
        side = _side(rng)
        radius = rng.uniform(0.06, 0.085) if mass else rng.uniform(0.035, 0.05)
        x, y = _lung_point(anat, side, rng, (0.1, 0.85), margin=radius * 0.6)
        field = _blob(anat, x, y, radius, radius * rng.uniform(0.85, 1.15), rng, 0.2 if mass else 0.06)
        scene.extra += rng.uniform(0.2, 0.3) * field * (1.1 - 0.2 * np.sqrt(np.clip(field, 0, 1)))
        mask |= field > 0.5
    return mask


def _plant_edema(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Bilateral perihilar ("bat wing") haze with Kerley B lines at the bases."""
    field = np.zeros_like(scene.extra)
    spread = rng.uniform(0.13, 0.18)
    for s in SIDES:
        hx, hy = anat.hilum(s)
        _blob(anat, hx + SIDE_SIGN[s] * 0.03, hy, spread, spread * 1.4, rng, 0.2, out=field)
    field = blur(field, 0.03) * scene.lung_soft
    mottle = 0.75 + 0.25 * smooth_noise(rng, anat.size, max(8, anat.size // 10))
    _add_density(scene, field * mottle, rng.uniform(0.05, 0.08), keep_air=0.25)
    # Kerley B: short horizontal lines reaching the lateral pleura at the bases.
    p = anat.params
    lines = np.zeros(scene.extra.shape, bool)
    for s in SIDES:
        _, lat = lung_borders(p, s, anat.Y)
        base = p.cp_y[s]
        rows = (np.abs(np.sin((anat.Y - base) * np.pi / 0.018)) < 0.3) & (anat.Y > base - 0.15)
        lines |= rows & (anat.u[s] > lat - 0.05) & anat.lung[s]
    scene.extra += 0.06 * blur(lines, 0.003)
    return (field > 0.3) & (anat.lung["R"] | anat.lung["L"])


def _plant_consolidation(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Lobar consolidation: dense, homogeneous, bounded by a fissure, with air bronchograms."""
    side = _side(rng)
    p = anat.params
    top, base = anat.lung_bounds(side)
    fissure = p.hilum_y[side] + rng.uniform(-0.03, 0.02)
    if rng.random() < 0.5:  # upper lobe: a sharp lower edge along the horizontal fissure
        region = anat.lung[side] & (anat.Y < fissure + 0.02 * (anat.u[side] - p.lung_w / 2))
    else:  # lower lobe: silhouettes the hemidiaphragm
        region = anat.lung[side] & (anat.Y > fissure + rng.uniform(0.05, 0.1))
    if region.any():  # a lobulated part of the lobe; the fissure edge stays sharp where it is reached
        ys, xs = np.nonzero(region)
        cy, cx = (ys.mean() + 0.5) / anat.size, (xs.mean() + 0.5) / anat.size
        region &= _blob(anat, cx, cy, rng.uniform(0.13, 0.2), rng.uniform(0.12, 0.18), rng, 0.3) > 0.5
    field = blur(region, 0.006)
    bronchi = np.exp(-((smooth_noise(rng, anat.size, max(6, anat.size // 12)) / 0.2) ** 2))
    _add_density(scene, field * (1.0 - 0.25 * bronchi), rng.uniform(0.08, 0.14))
    return region


def _plant_pneumonia(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Patchy airspace disease: a dense cluster of fluffy, mottled opacities in a lower zone."""
    side = _side(rng)
    cx, cy = _lung_point(anat, side, rng, (0.45, 0.95), margin=0.05)
    field = np.zeros_like(scene.extra)
    for _ in range(int(rng.integers(5, 9))):
        x = cx + rng.normal(0, 0.055)
        y = cy + rng.normal(0, 0.065)
        r = rng.uniform(0.04, 0.065)
        _blob(anat, x, y, r, r, rng, 0.3, out=field)
    mottle = np.clip(0.6 + 0.4 * smooth_noise(rng, anat.size, max(8, anat.size // 5)), 0.3, 1.0)
    field = blur(field, 0.008) * scene.lung_soft
    _add_density(scene, field * mottle, rng.uniform(0.06, 0.1), keep_air=0.1)
    return (field > 0.3) & anat.lung[side]


def _plant_atelectasis(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Plate-like (discoid) atelectasis: a thick, slightly oblique band in a lower zone."""
    side = _side(rng)
    x, y = _lung_point(anat, side, rng, (0.55, 0.85), margin=0.06)
    angle = rng.uniform(-0.35, 0.35)
    half_len = rng.uniform(0.07, 0.11)
    thick = rng.uniform(0.008, 0.014)
    rows, cols = anat.window(x, y, half_len + 0.03, half_len + 0.03)
    dx, dy = anat.X[:, cols] - x, anat.Y[rows] - y
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    band = np.zeros_like(scene.extra)
    band[rows, cols] = np.clip(1 - (across / thick) ** 2, 0, 1) * np.clip((half_len - np.abs(along)) / 0.02, 0, 1)
    _add_density(scene, blur(band, 0.003) * scene.lung_soft, rng.uniform(0.1, 0.16))
    zone = np.zeros(band.shape, bool)
    zone[rows, cols] = (np.abs(across) < thick + 0.015) & (np.abs(along) < half_len + 0.01)
    return zone & anat.lung[side]


# ---- pleura -----------------------------------------------------------------------------------

def _plant_pneumothorax(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Apical and lateral air without lung markings, bounded by a thin visceral pleural line."""
    side = _side(rng)
    p = anat.params
    top, base = anat.lung_bounds(side)
    _, lat = lung_borders(p, side, anat.Y)
    depth0 = rng.uniform(0.08, 0.14)
    reach = rng.uniform(0.45, 0.8)  # how far down the lateral wall it extends
    h = np.clip((anat.Y - top) / (reach * (base - top)), 0.0, 1.0)
    depth = depth0 * (1.0 - h**2)
    edge = lat - depth - 0.02 * (1.0 - h) * 2.0
    region = anat.lung[side] & (anat.u[side] > edge) & (h < 1.0)
    rim = blur(region, 0.004)
    scene.air_gain += 0.5 * rim
    scene.vessel_gain *= 1.0 - rim
    line = np.exp(-(((anat.u[side] - edge) / 0.004) ** 2)) * (h < 0.98) * anat.lung[side]
    scene.extra += 0.12 * line
    return region


def _plant_effusion(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Fluid at a base: blunted costophrenic angle and a meniscus rising along the lateral wall."""
    mask = np.zeros(scene.extra.shape, bool)
    sides = SIDES if rng.random() < 0.3 else (_side(rng),)
    p = anat.params
    for side in sides:
        top, base = anat.lung_bounds(side)
        level = base - rng.uniform(0.14, 0.3) * (base - top)
        meniscus = level - 0.12 * (anat.u[side] / p.lung_w) ** 4
        region = anat.lung[side] & (anat.Y > meniscus)
        # Fluid fills the lung base only: density below the diaphragm would brighten the abdomen
        # outside the mask, a cue a classifier could learn instead of the effusion.
        field = np.clip((anat.Y - meniscus) / 0.02, 0, 1) * blur(anat.lung[side], 0.008)
        _add_density(scene, field * (anat.u[side] > 0), rng.uniform(0.07, 0.11))
        mask |= region
    return mask


def _plant_pleural_other(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Pleural thickening: a lobulated dense rind along the lateral chest wall, some calcified."""
    side = _side(rng)
    p = anat.params
    top, base = anat.lung_bounds(side)
    h0 = rng.uniform(0.1, 0.45)
    h1 = h0 + rng.uniform(0.3, 0.45)
    _, lat = lung_borders(p, side, anat.Y)
    h = (anat.Y - top) / (base - top)
    span = np.clip(np.minimum(h - h0, h1 - h) / 0.06, 0, 1)
    bumps = 1.0 + 0.35 * np.sin(anat.Y * rng.uniform(40, 70) + rng.uniform(0, 6.3))
    thick = rng.uniform(0.035, 0.055) * span * bumps
    inside = lat - anat.u[side]
    band = np.clip((thick - inside) / 0.008, 0, 1) * (inside > -0.01)
    band = blur(band * anat.thorax, 0.004)
    _add_density(scene, band, rng.uniform(0.12, 0.2))
    return (band > 0.3) & anat.lung[side]


# ---- bones and devices ------------------------------------------------------------------------

def _prepare_fracture(p: AnatomyParams, rng: Rng) -> None:
    """Break two or three consecutive posterior ribs along a line on the lateral arc."""
    side = _side(rng)
    first = int(rng.integers(2, 7))
    u = rng.uniform(0.45, 0.7) * p.lung_w
    for k in range(first, first + int(rng.integers(2, 4))):
        p.rib_breaks.append(RibBreak(side, k, u + rng.normal(0, 0.01), rng.uniform(0.012, 0.018),
                                     rng.choice([-1, 1]) * rng.uniform(0.012, 0.018)))


def _plant_fracture(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    p = anat.params
    mask = np.zeros(scene.extra.shape, bool)
    for br in p.rib_breaks:
        rib = next(r for r in anat.ribs if (r.side, r.index, r.kind) == (br.side, br.index, "posterior"))
        x = p.cx + SIDE_SIGN[br.side] * br.u
        y = float(rib.y_at(br.u / p.lung_w)) + br.step / 2
        rows, cols = anat.window(x, y, 0.05, 0.05)
        d2 = (anat.X[:, cols] - x) ** 2 + (anat.Y[rows] - y) ** 2
        scene.extra[rows, cols] += rng.uniform(0.25, 0.32) * np.exp(-d2 / 0.025**2)  # callus
        mask[rows, cols] |= d2 < 0.045**2
    return mask


def _polyline(anat: Anatomy, points: np.ndarray, n: int) -> np.ndarray:
    """Rasterise a piecewise-linear curve through control points as single-pixel dots."""
    seg = np.linspace(0, len(points) - 1, n)
    i = np.minimum(seg.astype(int), len(points) - 2)
    f = (seg - i)[:, None]
    pts = points[i] * (1 - f) + points[i + 1] * f
    img = np.zeros((anat.size, anat.size), np.float32)
    rc = np.clip((pts * anat.size).astype(int), 0, anat.size - 1)
    img[rc[:, 1], rc[:, 0]] = 1.0
    return img


def _plant_devices(anat: Anatomy, scene: Scene, rng: Rng) -> np.ndarray:
    """Tubes, lines, ECG leads and pacemakers: thin, radiopaque, usually several at once."""
    p = anat.params
    size = anat.size
    n = 3 * size
    drawn = np.zeros((size, size), np.float32)
    kinds = rng.permutation(["ett", "ng", "cvc", "ecg", "pacer"])[: int(rng.integers(1, 4))]
    for kind in kinds:
        if kind == "ett":
            pts = np.array([[p.cx, 0.0], [p.cx + 0.005, p.carina_y - 0.05]])
        elif kind == "ng":
            gx = p.cx + 0.5 * p.lung_w
            gy = p.cp_y["L"] - p.dome_rise["L"] + 0.08
            pts = np.array([[p.cx - 0.01, 0.0], [p.cx + 0.01, p.heart_top], [p.cx + 0.03, gy - 0.05], [gx, gy]])
        elif kind == "cvc":
            s = SIDE_SIGN[_side(rng)]
            pts = np.array([[p.cx + s * (p.lung_w + 0.02), p.clavicle_y - 0.04], [p.cx + s * 0.12, p.clavicle_y + 0.01],
                            [p.cx - 0.035, p.carina_y], [p.cx - 0.03, p.heart_top + 0.02]])
        elif kind == "pacer":
            bx, by = p.cx + rng.uniform(0.2, 0.28), p.clavicle_y + 0.06
            box = (np.abs(anat.X - bx) < 0.035) & (np.abs(anat.Y - by) < 0.025)
            drawn = np.maximum(drawn, 3.0 * box)
            pts = np.array([[bx, by], [p.cx + 0.05, p.carina_y], [p.cx - 0.02, p.heart_top + 0.05],
                            [p.cx + 0.05, p.cp_y["L"] - p.dome_rise["L"] - 0.01]])
        else:  # ecg: ring electrodes with leads running off the film
            pts = None
            for _ in range(int(rng.integers(2, 5))):
                ex, ey = rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.75)
                r = np.sqrt((anat.X - ex) ** 2 + (anat.Y - ey) ** 2)
                drawn = np.maximum(drawn, 3.0 * (np.abs(r - 0.014) < 0.005))
                lead = np.array([[ex, ey], [ex + rng.uniform(-0.2, 0.2), ey - 0.15], [rng.uniform(0, 1), 0.0]])
                drawn = np.maximum(drawn, _polyline(anat, lead, n))
        if pts is not None:
            drawn = np.maximum(drawn, _polyline(anat, pts, n))
    line = np.clip(blur(drawn, max(0.5, 0.6 * size / 256) / size) * 2.5, 0, 1)
    scene.extra += 0.45 * line
    return blur(drawn, 0.008) > 0.02


FINDINGS: dict[str, Finding] = {
    f.name: f
    for f in (
        Finding("Enlarged Cardiomediastinum", _plant_mediastinum, _prepare_mediastinum),
        Finding("Cardiomegaly", _plant_heart, _prepare_heart),
        Finding("Lung Opacity", _plant_lung_opacity),
        Finding("Lung Lesion", _plant_lesion),
        Finding("Edema", _plant_edema),
        Finding("Consolidation", _plant_consolidation),
        Finding("Pneumonia", _plant_pneumonia),
        Finding("Atelectasis", _plant_atelectasis),
        Finding("Pneumothorax", _plant_pneumothorax),
        Finding("Pleural Effusion", _plant_effusion),
        Finding("Pleural Other", _plant_pleural_other),
        Finding("Fracture", _plant_fracture, _prepare_fracture),
        Finding("Support Devices", _plant_devices),
    )
}
