"""Reference images for path and perturbation methods: what "absence of signal" means for a CXR."""

from __future__ import annotations

import torch
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d

BASELINES: tuple[str, ...] = ("zeros", "blurred", "mean")


def make_baseline(images: torch.Tensor, kind: str = "zeros", blur_sigma: float = 10.0,
                  value: float | None = None) -> torch.Tensor:
    """Baseline with the shape of ``images (B, C, H, W)``.

    - ``zeros``: black image (the usual IG reference).
    - ``blurred``: Gaussian blur with ``blur_sigma`` pixels (replicate padding, so borders keep
      their brightness); keeps global anatomy, removes local evidence.
    - ``mean``: constant image at ``value`` if given (e.g. the dataset mean), else at each
      image's own mean intensity.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        # A (1, H, W) image was blurred along its rows only (H read as channels) under "blurred".
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (B, C, H, W), got {shape}")
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "blurred":
        if blur_sigma <= 0:
            raise ValueError(f"blur_sigma must be > 0, got {blur_sigma}")
        kernel = gaussian_1d(torch.tensor(float(blur_sigma)), truncated=4.0, approx="sampled", normalize=True)
        return separable_filtering(images, kernel.to(images), mode="replicate")
    if kind == "mean":
        if value is not None:
            return torch.full_like(images, float(value))
        return images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images).clone()
    raise ValueError(f"unknown baseline {kind!r}; expected one of {list(BASELINES)}")
