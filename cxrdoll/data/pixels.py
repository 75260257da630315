"""Order statistics of an image, shared by the PNG/JPEG rule (``transforms.unit_range``) and DICOM's
min-max fallback; numpy only, so the DICOM loader stays light."""

from __future__ import annotations

import numpy as np

# Share of pixels at each end that may lie outside the scaling range and be clipped: hot/dead
# pixels and burned-in markers at full scale (common in 16-bit exports) no longer decide it.
TAIL_FRACTION = 0.001


def robust_range(array: np.ndarray, tail: float = TAIL_FRACTION) -> tuple[float, float]:
    """(low, high): the values of rank floor(tail (n-1)) and ceil((1-tail) (n-1)) in ascending order.

    Those are ``np.percentile(array, [100 tail, 100 (1-tail)])`` with methods "lower" and "higher"
    (never narrower than the interpolated percentiles); plain (min, max) for up to 1 / tail pixels
    (1000 at the default).
    One ``np.partition``: about 55 ms on a 3000x2500 uint16 image.
    """
    flat = np.ravel(array)
    n = flat.size
    ranks = [int(np.floor(tail * (n - 1))), int(np.ceil((1.0 - tail) * (n - 1)))]
    part = np.partition(flat, ranks)
    return float(part[ranks[0]]), float(part[ranks[1]])
