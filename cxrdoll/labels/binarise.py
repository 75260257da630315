"""Label: a soft map in [0, 1] becomes a binary mask (Otsu, top-q %, or a fixed threshold).

Zero pixels are never foreground, whatever the method: a map with no evidence gives an empty mask.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.filters import threshold_otsu

METHODS = ("otsu", "top_q", "fixed")


def otsu_mask(soft: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Otsu's threshold over all pixels of the map; foreground is strictly above it."""
    values = soft.detach().to("cpu", torch.float32).numpy()
    if float(values.max()) == float(values.min()):
        return torch.zeros_like(soft, dtype=torch.bool)
    threshold = float(threshold_otsu(values, nbins=nbins))
    return (soft > threshold) & (soft > 0)


def top_q_mask(soft: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` % highest pixels (ties at the cut included)."""
    if not 0 < q <= 100:
        raise ValueError(f"top-q percentage must be in (0, 100], got {q}")
    flat = soft.detach().reshape(-1).to(torch.float32)
    k = max(1, int(round(flat.numel() * q / 100.0)))
    cut = torch.topk(flat, k).values[-1]
    return (soft >= cut) & (soft > 0)


def fixed_mask(soft: torch.Tensor, threshold: float) -> torch.Tensor:
    if not 0 < threshold <= 1:
        raise ValueError(f"fixed threshold must be in (0, 1], got {threshold}")
    return soft >= threshold


def binarise(soft: torch.Tensor, method: str = "otsu", value: float | None = None) -> torch.Tensor:
    """Dispatch on ``method``; ``value`` is q (percent) for ``top_q`` and the threshold for ``fixed``.

    ``soft``: a torch tensor or numpy array of any shape, thresholded as one map; returns a bool tensor.
    """
    soft = torch.as_tensor(soft)
    if soft.numel() == 0 or not torch.isfinite(soft).all():
        # NaN broke Otsu inside scikit-image and silently dropped pixels from top_q and fixed.
        raise ValueError(f"soft map must be non-empty and finite, got shape {tuple(soft.shape)}"
                         + ("" if soft.numel() == 0 else " with NaN or infinite values"))
    if method == "otsu":
        return otsu_mask(soft)
    if method in ("top_q", "fixed") and value is None:
        raise ValueError(f"binarisation {method!r} needs a value (q percent or threshold)")
    if method == "top_q":
        return top_q_mask(soft, float(value))
    if method == "fixed":
        return fixed_mask(soft, float(value))
    raise ValueError(f"unknown binarisation {method!r}; expected one of {METHODS}")


def as_uint8(mask: torch.Tensor) -> np.ndarray:
    return mask.detach().to("cpu").numpy().astype(np.uint8)
