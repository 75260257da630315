"""Sliding-window occlusion: how much each target logit drops when a window is replaced by a baseline.

A perturbation method needs no gradients, so it explains any model (and checks gradient methods).
Each forward pass scores a batch of occluded copies for all targets of the image at once.
The value at a pixel is the mean, over the windows that cover it, of ``logit(x) - logit(x occluded)``
(captum's ``Occlusion`` convention), so positive means "evidence for the class".
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
from torch import nn

from cxrdoll.explain.baselines import make_baseline
from cxrdoll.explain.common import autocast_dtype, check_inputs, check_logits, eval_mode, model_device


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis; a last window flush with the edge guarantees full coverage."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


class OcclusionExplainer:
    """Batched sliding-window occlusion.

    Args:
        model: classifier returning logits ``(N, K)``; run in eval mode without gradients.
        window: side of the square occluding window in pixels (clipped to the image).
        stride: step between windows in pixels.
        baseline, blur_sigma, baseline_value: what fills the window (see ``make_baseline``).
        max_batch: most occluded copies per forward pass.
        amp_dtype: autocast dtype for the forward passes, None for fp32.
    """

    def __init__(self, model: nn.Module, window: int = 32, stride: int = 16, baseline: str = "zeros",
                 blur_sigma: float = 10.0, baseline_value: float | None = None, max_batch: int = 64,
                 amp_dtype: str | torch.dtype | None = None) -> None:
        if window < 1 or stride < 1 or max_batch < 1:
            raise ValueError(f"window, stride and max_batch must be >= 1, got {window}, {stride}, {max_batch}")
        if stride > window:
            raise ValueError(f"occlusion stride {stride} is larger than its window {window}: the pixels between "
                             "windows would never be occluded (their map would be 0/0)")
        make_baseline(torch.zeros(1, 1, 2, 2), baseline, blur_sigma)  # fail now, not mid-run
        self.model = model
        self.window = int(window)
        self.stride = int(stride)
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.baseline_value = baseline_value
        self.max_batch = int(max_batch)
        self.amp_dtype = autocast_dtype(amp_dtype)

    def _windows(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Boolean masks ``(W, 1, H, W)``, True inside each occluding window."""
        wh, ww = min(self.window, height), min(self.window, width)
        masks = []
        for y in window_starts(height, wh, self.stride):
            for x in window_starts(width, ww, self.stride):
                m = torch.zeros((1, height, width), dtype=torch.bool, device=device)
                m[:, y : y + wh, x : x + ww] = True
                masks.append(m)
        return torch.stack(masks)

    @torch.no_grad()
    def attribute(self, images: torch.Tensor, targets: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per image ``i``, float32 ``(len(targets[i]), H, W)``, summed over input channels."""
        targets = check_inputs(images, targets)
        device = model_device(self.model)
        x = images.detach().to(device=device, dtype=torch.float32)
        base = make_baseline(x, self.baseline, self.blur_sigma, self.baseline_value)
        masks = self._windows(x.shape[2], x.shape[3], device)
        coverage = masks.float().sum(dim=0)  # (1, H, W), >= 1 everywhere since stride <= window
        out = []
        with eval_mode(self.model):
            for i, tgt in enumerate(targets):
                total = torch.zeros((len(tgt), *x.shape[2:]), device=device)
                if tgt:
                    idx = torch.tensor(tgt, dtype=torch.long, device=device)
                    ref = self._forward(x[i : i + 1], targets)[0, idx]
                    for chunk in masks.split(self.max_batch):
                        occluded = torch.where(chunk, base[i], x[i])
                        drop = ref - self._forward(occluded, targets)[:, idx]  # (n, T)
                        total += torch.einsum("nt,nhw->thw", drop, chunk[:, 0].float())
                # the occluded window spans every channel, so the channel sum is C times the map
                out.append((total / coverage * x.shape[1]).to(images.device))
        return out

    def _forward(self, batch: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        ctx = nullcontext() if self.amp_dtype is None else torch.autocast(batch.device.type, dtype=self.amp_dtype)
        with ctx:
            logits = self.model(batch)
        return check_logits(logits, targets).float()
