"""A parametric frontal chest: sampled shape parameters and the masks they imply.

Coordinates are normalised: ``x`` runs 0 -> 1 left to right across the image, ``y`` 0 -> 1 top to
bottom. The phantom is a PA view, so the patient's right ("R") is on the image's left. Every
structure is a closed-form function of a few numbers, which keeps a 256-pixel phantom at a few
milliseconds and lets findings reshape anatomy (a bigger heart, a broken rib) before rendering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

SIDES: tuple[str, str] = ("R", "L")
# Image-space direction of each side, measured from the midline.
SIDE_SIGN: dict[str, float] = {"R": -1.0, "L": 1.0}
N_RIBS = 10


@dataclass
class RibBreak:
    """A fracture on posterior rib ``index`` of ``side`` at lateral distance ``u`` (normalised)."""

    side: str
    index: int
    u: float
    gap: float
    step: float


@dataclass
class AnatomyParams:
    """The numbers that define one patient's chest; findings may edit them before building."""

    cx: float
    apex_y: float
    cp_y: dict[str, float]  # costophrenic angle height per side
    dome_rise: dict[str, float]  # how far the dome peak rises above the costophrenic angle
    lung_w: float  # half width of the thorax inside the chest wall
    wall: float  # chest wall thickness
    med_w: float  # half width of the upper mediastinum
    aortic_knob: float
    heart_cx: float
    heart_left: float  # extent to the patient's right (image left) of heart_cx
    heart_right: float  # extent to the patient's left (image right) of heart_cx
    heart_top: float
    heart_scale: float = 1.0
    med_scale: float = 1.0
    spine_w: float = 0.04
    trachea_w: float = 0.018
    carina_y: float = 0.35
    hilum_y: dict[str, float] = field(default_factory=dict)
    rib_spacing: float = 0.065
    rib_tilt: float = 0.06
    rib_curve: float = 0.10
    clavicle_y: float = 0.2
    clavicle_drop: float = 0.05
    neck_w: float = 0.12
    gastric_bubble: float = 0.0
    rib_breaks: list[RibBreak] = field(default_factory=list)


def sample_params(rng: np.random.Generator) -> AnatomyParams:
    """Draw a plausible adult chest; ranges give visibly different anatomy from image to image."""
    apex = rng.uniform(0.08, 0.13)
    cp_r = rng.uniform(0.74, 0.84)
    lung_w = rng.uniform(0.36, 0.43)
    heart_top = rng.uniform(0.45, 0.52)
    return AnatomyParams(
        cx=0.5 + rng.uniform(-0.02, 0.02),
        apex_y=apex,
        cp_y={"R": cp_r, "L": cp_r + rng.uniform(0.0, 0.03)},
        dome_rise={"R": rng.uniform(0.08, 0.12), "L": rng.uniform(0.05, 0.09)},
        lung_w=lung_w,
        wall=rng.uniform(0.03, 0.05),
        med_w=rng.uniform(0.055, 0.07),
        aortic_knob=rng.uniform(0.01, 0.03),
        heart_cx=rng.uniform(0.03, 0.05),
        heart_left=rng.uniform(0.115, 0.13),
        heart_right=rng.uniform(0.16, 0.19),
        heart_top=heart_top,
        spine_w=rng.uniform(0.035, 0.045),
        trachea_w=rng.uniform(0.016, 0.022),
        carina_y=heart_top - rng.uniform(0.08, 0.11),
        hilum_y={"R": heart_top - rng.uniform(0.0, 0.03), "L": heart_top - rng.uniform(0.03, 0.06)},
        rib_spacing=(cp_r + 0.06 - apex) / N_RIBS * rng.uniform(0.95, 1.05),
        rib_tilt=rng.uniform(0.04, 0.08),
        rib_curve=rng.uniform(0.13, 0.19),
        clavicle_y=apex + rng.uniform(0.07, 0.1),
        clavicle_drop=rng.uniform(0.07, 0.11),
        neck_w=rng.uniform(0.10, 0.14),
        gastric_bubble=float(rng.uniform(0.02, 0.04)) if rng.random() < 0.5 else 0.0,
    )


@dataclass
class Rib:
    """One rib centreline ``y = y0 + a*t + b*t**2`` with ``t = u / lung_w`` over ``[t0, t1]``."""

    side: str
    kind: str  # "posterior" | "anterior"
    index: int
    y0: float
    a: float
    b: float
    t0: float
    t1: float
    half_thick: float

    def y_at(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.y0 + self.a * t + self.b * t * t


@dataclass
class Anatomy:
    """Masks and geometry of one built chest at a given pixel size."""

    size: int
    params: AnatomyParams
    X: np.ndarray
    Y: np.ndarray
    u: dict[str, np.ndarray]  # lateral distance from the midline, positive towards each side
    lung: dict[str, np.ndarray]
    heart: np.ndarray
    clavicle: dict[str, np.ndarray]
    mediastinum: np.ndarray  # upper mediastinum (above the heart)
    thorax: np.ndarray  # inside the chest wall, above the diaphragm
    body: np.ndarray  # float thickness profile 0..1
    below_diaphragm: np.ndarray
    ribs: list[Rib]

    def hilum(self, side: str) -> tuple[float, float]:
        p = self.params
        return p.cx + SIDE_SIGN[side] * (p.med_w + 0.07), p.hilum_y[side]

    def lung_bounds(self, side: str) -> tuple[float, float]:
        """Top and bottom (normalised y) of a lung: apex and costophrenic angle."""
        return self.params.apex_y, self.params.cp_y[side]

    def window(self, x: float, y: float, rx: float, ry: float) -> tuple[slice, slice]:
        return pixel_window(self.size, x, y, rx, ry)


def pixel_window(n: int, x: float, y: float, rx: float, ry: float) -> tuple[slice, slice]:
    """Pixel box (with a margin) around an ellipse, so local shapes cost their own area, not the image's."""
    r0, r1 = int(max((y - ry) * n, 0)), int(min((y + ry) * n + 2, n))
    c0, c1 = int(max((x - rx) * n, 0)), int(min((x + rx) * n + 2, n))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1]: ``Y`` a column ``(size, 1)``, ``X`` a row ``(1, size)``.

    Broadcasting them keeps every function of one coordinate (borders, domes, spine) one-dimensional,
    which is most of the speed of the generator. Read-only: they are shared between images.
    """
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    Y, X = c[:, None].copy(), c[None, :].copy()
    Y.setflags(write=False)
    X.setflags(write=False)
    return Y, X


def lung_borders(p: AnatomyParams, side: str, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Medial and lateral lung borders (distance from midline) as a function of height."""
    t = np.clip((Y - p.apex_y) / (p.cp_y[side] - p.apex_y), 0.0, 1.0)
    u_apex = 0.55 * (p.med_w + p.lung_w)
    # Square roots near the top give a rounded apex (a circle's half-width grows like sqrt(depth)).
    lat = u_apex + (p.lung_w - u_apex) * np.sqrt(np.minimum(t / 0.5, 1.0) * (2 - np.minimum(t / 0.5, 1.0)))
    med = u_apex - (u_apex - p.med_w * p.med_scale) * np.sqrt(np.minimum(t / 0.22, 1.0))
    if side == "L":
        med = med + p.aortic_knob * np.exp(-(((Y - (p.carina_y - 0.04)) / 0.035) ** 2))
    return med, lat


def dome_curve(p: AnatomyParams, side: str, u: np.ndarray) -> np.ndarray:
    """Hemidiaphragm height: a parabola peaking mid-lung, meeting the wall at the CP angle."""
    peak_u = 0.45 * p.lung_w
    peak_y = p.cp_y[side] - p.dome_rise[side]
    k = p.dome_rise[side] / (p.lung_w - peak_u) ** 2
    return peak_y + k * (u - peak_u) ** 2 * np.where(u < peak_u, 0.6, 1.0)


def build_anatomy(p: AnatomyParams, size: int) -> Anatomy:
    """Rasterise the parameters into masks at ``size`` x ``size``."""
    Y, X = grid(size)
    dx = X - p.cx
    u = {"R": -dx, "L": dx}
    dome = {s: dome_curve(p, s, np.abs(dx)) for s in SIDES}

    # Heart: an asymmetric ellipse resting on the left hemidiaphragm.
    hx = p.cx + p.heart_cx * p.heart_scale
    bottom = p.cp_y["L"] - p.dome_rise["L"] + 0.03
    ry = (bottom - p.heart_top) * (0.55 + 0.45 * p.heart_scale)
    hcy = bottom - 0.55 * ry
    rx = np.where(X < hx, p.heart_left, p.heart_right) * p.heart_scale
    heart = np.zeros((size, size), dtype=bool)
    rows, cols = pixel_window(size, hx, hcy, max(p.heart_left, p.heart_right) * p.heart_scale, ry)
    Yh, Xh = Y[rows], X[:, cols]
    heart[rows, cols] = (((Xh - hx) / rx[:, cols]) ** 2 + ((Yh - hcy) / ry) ** 2 < 1.0) & (
        Yh < np.maximum(dome["L"], dome["R"])[:, cols] + 0.01)

    lung = {}
    thorax = np.zeros((size, size), dtype=bool)
    not_heart = ~heart
    for s in SIDES:
        med, lat = lung_borders(p, s, Y)
        side_u = u[s]
        inside = (side_u < lat) & (Y > p.apex_y) & (Y < dome[s]) & (side_u > 0)
        thorax |= inside
        lung[s] = inside & (side_u > med) & not_heart
    thorax |= heart
    med_upper = (np.abs(dx) < p.med_w * p.med_scale) & (Y < p.heart_top + 0.04) & (Y > p.apex_y + 0.03)

    # Body outline: neck, shoulders, chest wall following the lungs, abdomen; cylinder-like profile.
    shoulder_y = p.apex_y
    ramp = np.clip((Y - (shoulder_y - 0.1)) / 0.1, 0.0, 1.0)
    shoulders = p.neck_w + (p.lung_w + p.wall + 0.16 - p.neck_w) * (ramp * ramp * (3 - 2 * ramp))
    chest = np.maximum(lung_borders(p, "R", Y)[1], p.lung_w * 0.9) + p.wall + 0.03
    fade = np.clip((Y - shoulder_y) / 0.25, 0.0, 1.0)
    half = np.where(Y > shoulder_y, chest + (1 - fade) * 0.13, shoulders)
    body = pow_11_32(np.clip(1.0 - (dx / half) ** 2, 0.0, 1.0))
    body *= 0.85 + 0.15 * ramp
    below = Y > np.where(dx < 0, dome["R"], dome["L"])

    clav = {s: _clavicle_mask(p, s, u[s], Y) for s in SIDES}
    ribs = _ribs(p)
    return Anatomy(size, p, X, Y, u, lung, heart, clav, med_upper, thorax, body.astype(np.float32, copy=False), below,
                   ribs)


def clavicle_centre(p: AnatomyParams, t: np.ndarray) -> np.ndarray:
    """Clavicle centreline height at fraction ``t`` from its medial to its lateral end (S-shaped)."""
    return p.clavicle_y - p.clavicle_drop * t + 0.012 * np.sin(2 * np.pi * t)


def pow_11_32(x: np.ndarray) -> np.ndarray:
    """``x ** (11/32)`` (about ``x ** 0.35``) from square roots, as 1/4 + 1/16 + 1/32: a per-pixel
    power was a third of the cost of building the anatomy."""
    out = np.sqrt(x)
    np.sqrt(out, out=out)
    root = np.sqrt(out)
    np.sqrt(root, out=root)
    out *= root
    np.sqrt(root, out=root)
    out *= root
    return out


def _clavicle_mask(p: AnatomyParams, side: str, u: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Clavicle mask; only the rows it can reach are tested (with a row of margin against rounding)."""
    u0, u1 = p.med_w * 0.4, p.lung_w + p.wall + 0.03
    t = (u - u0) / (u1 - u0)
    thick = 0.013 + 0.004 * np.abs(np.cos(np.pi * t))
    centre = clavicle_centre(p, t)
    on = (t > 0) & (t < 1)
    mask = np.zeros((Y.shape[0], u.shape[1]), dtype=bool)
    if on.any():
        r0, r1 = np.searchsorted(Y.ravel(), [(centre - thick)[on].min(), (centre + thick)[on].max()])
        rows = slice(max(r0 - 1, 0), r1 + 1)
        mask[rows] = on & (np.abs(Y[rows] - centre) < thick)
    return mask


def _ribs(p: AnatomyParams) -> list[Rib]:
    """Posterior ribs arc up-and-out from the spine; anterior ribs slope down towards the midline."""
    ribs = []
    for s in SIDES:
        for k in range(N_RIBS):
            y0 = p.apex_y - 0.03 + k * p.rib_spacing
            # Upper ribs are shorter and more curved.
            t1 = min(1.0, 0.55 + 0.12 * k) * (p.lung_w + p.wall * 0.5) / p.lung_w
            ribs.append(Rib(s, "posterior", k, y0, -p.rib_tilt, p.rib_curve + 0.04 * max(0, 3 - k), 0.08, t1,
                            0.011 + 0.0012 * k))
        for k in range(7):
            y_lat = p.apex_y + 0.06 + k * p.rib_spacing * 1.15
            # Parameterised from the midline; high laterally, low medially.
            drop = 0.10 + 0.01 * k
            ribs.append(Rib(s, "anterior", k, y_lat + drop, -drop * 1.6, drop * 0.6, 0.30, 1.0, 0.013))
    return ribs
