"""Robust scaling of an image, shared by the PNG/JPEG rule (``transforms.unit_range``) and DICOM's
min-max fallback; numpy only, so the DICOM loader stays light."""

from __future__ import annotations

import numpy as np

# Share of pixels at each end that may lie outside the scaling range and be clipped: hot/dead
# pixels and burned-in markers at full scale (common in 16-bit exports) no longer decide it.
TAIL_FRACTION = 0.001


def robust_range(array: np.ndarray, tail: float = TAIL_FRACTION) -> tuple[float, float]:
    """(low, high): the values of rank floor(tail (n-1)) and ceil((1-tail) (n-1)) in ascending order,
    about the 0.1st and 99.9th percentiles at the default (float rounding of those ranks may differ
    from ``np.percentile``'s by one); plain (min, max) for up to 1 / tail pixels (1000 at the default).
    One ``np.partition``: about 55 ms on a 3000x2500 uint16 image. Empty and non-finite images are
    refused (ValueError): their scale is undefined.
    """
    flat = np.ravel(array)
    n = flat.size
    if n == 0:
        raise ValueError("an empty image (no pixels)")
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        raise ValueError("the image has NaN or infinite pixel values")
    ranks = [int(np.floor(tail * (n - 1))), int(np.ceil((1.0 - tail) * (n - 1)))]
    part = np.partition(flat, ranks)
    return float(part[ranks[0]]), float(part[ranks[1]])


def robust_minmax(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """``array`` min-max scaled between ``low`` and ``high`` (``robust_range``) and clipped to [0, 1]; plain
    min-max when those coincide (an almost constant image), zeros for a constant one. Float32 for
    float32 or integer input, float64 for float64."""
    values = array if array.dtype.kind == "f" else array.astype(np.float32)
    if high <= low:
        low, high = float(values.min()), float(values.max())
        if high <= low:
            return np.zeros_like(values)
    scaled = (values - low) / (high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)
