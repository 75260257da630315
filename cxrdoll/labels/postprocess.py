"""Turn a raw attribution into a soft map in [0, 1]: positive part, Gaussian smoothing, percentile scaling.

Raw IG maps are signed and speckled, and their scale differs by model and image; these steps make
maps of different classifiers comparable before they are distilled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def check_maps(maps: object) -> None:
    """ValueError unless ``maps`` is a ``(T, H, W)`` tensor. One ``(H, W)`` map would otherwise be read
    as H maps of one row each: percentile normalisation then scaled every row on its own."""
    if not isinstance(maps, torch.Tensor):
        raise ValueError(f"expected maps as a torch tensor of shape (T, H, W), got {type(maps).__name__}")
    if maps.ndim != 3:
        hint = "; a single (H, W) map is maps[None]" if maps.ndim == 2 else ""
        raise ValueError(f"expected maps of shape (T, H, W), got {tuple(maps.shape)}{hint}")


def positive_part(maps: torch.Tensor) -> torch.Tensor:
    """Evidence *for* the observation only; negative attribution is not a location of the finding."""
    return maps.clamp_min(0.0)


def gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``ceil(truncate * sigma)``."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = max(1, math.ceil(truncate * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(torch.float32)


def gaussian_smooth(maps: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of ``(T, H, W)`` maps; borders replicate the edge value.

    ``sigma <= 0`` returns the maps unchanged, so smoothing can be switched off from a config.
    """
    check_maps(maps)
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma, truncate).to(maps.device)
    radius = kernel.numel() // 2
    x = maps.to(torch.float32).unsqueeze(1)  # (T, 1, H, W)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def percentile_normalise(maps: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Divide each map by its own ``percentile`` and clip to [0, 1].

    A high percentile rather than the max keeps one hot pixel from flattening the rest of the map.
    Where that percentile is 0 (a map that is mostly zero) the max is used; an all-zero map stays 0.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    check_maps(maps)
    flat = maps.reshape(maps.shape[0], -1).to(torch.float32)
    scale = torch.quantile(flat, percentile / 100.0, dim=1)
    peak = flat.amax(dim=1)
    scale = torch.where(scale > 0, scale, peak)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (maps / scale.view(-1, 1, 1)).clamp(0.0, 1.0)


def postprocess(maps: torch.Tensor, sigma: float = 2.0, percentile: float = 99.0) -> torch.Tensor:
    """Raw ``(T, H, W)`` attributions -> soft maps in [0, 1], in the order the design fixes."""
    check_maps(maps)
    return percentile_normalise(gaussian_smooth(positive_part(maps), sigma), percentile)
