"""Fast Integrated Gradients: one shared forward pass over the path serves every target of an image.

captum's ``IntegratedGradients`` runs a full forward and backward over the path for each target.
Here the path points of several images are flattened into one stream of (image, step) elements,
cut into chunks of at most ``max_batch`` elements (the memory budget); each chunk is forwarded
once and back-propagated once per target slot, either as one vmapped backward
(``torch.autograd.grad(..., is_grads_batched=True)``) or as a loop on the retained graph.
Quadrature nodes and weights are captum's, so results match captum given the same settings.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, approximation_parameters
from torch import nn

from cxrdoll.explain.baselines import make_baseline
from cxrdoll.explain.common import (
    autocast_dtype,
    check_inputs,
    check_logits,
    eval_mode_with_grad,
    model_device,
)

BACKWARD_MODES: tuple[str, ...] = ("batched", "loop")


def quadrature(method: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``alphas`` in [0, 1] and weights summing to <= 1, as float64 tensors ``(steps,)``."""
    if method not in SUPPORTED_METHODS:
        raise ValueError(f"unknown IG method {method!r}; expected one of {SUPPORTED_METHODS}")
    min_steps = 1 if method == "gausslegendre" else 2
    if steps < min_steps:
        raise ValueError(f"IG method {method!r} needs steps >= {min_steps}, got {steps}")
    weights_fn, alphas_fn = approximation_parameters(method)
    return (torch.tensor(alphas_fn(steps), dtype=torch.float64),
            torch.tensor(weights_fn(steps), dtype=torch.float64))


class FastIntegratedGradients:
    """Integrated Gradients of logits for several targets per image, batched over images and steps.

    Args:
        model: classifier returning logits ``(N, K)``; it is run in eval mode and left in the
            mode it was in.
        steps: number of quadrature points on the path.
        method: ``gausslegendre`` or ``riemann_{left,right,middle,trapezoid}`` (captum's names).
        baseline: ``zeros``, ``blurred`` or ``mean`` (see :func:`make_baseline`).
        blur_sigma, baseline_value: parameters of the blurred / mean baselines.
        max_batch: most path elements (image x step) per forward pass: the memory budget.
        backward: ``loop`` (one backward per target on the retained graph) or ``batched`` (one
            vmapped backward for all targets); same result. ``loop`` is the default: it was faster
            on both devices measured (H200: 10-30 %; 2-core CPU: 1.5-1.9x) and holds one set of
            backward buffers instead of one per target.
        amp_dtype: autocast dtype for the forward pass (``bf16``/``fp16``), None for fp32.
    """

    def __init__(self, model: nn.Module, steps: int = 20, method: str = "gausslegendre",
                 baseline: str = "zeros", blur_sigma: float = 10.0, baseline_value: float | None = None,
                 max_batch: int = 80, backward: str = "loop",
                 amp_dtype: str | torch.dtype | None = None) -> None:
        self.alphas, self.weights = quadrature(method, int(steps))
        make_baseline(torch.zeros(1, 1, 2, 2), baseline, blur_sigma)  # fail now, not mid-run
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if backward not in BACKWARD_MODES:
            raise ValueError(f"unknown backward mode {backward!r}; expected one of {list(BACKWARD_MODES)}")
        self.model = model
        self.steps = int(steps)
        self.method = method
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.baseline_value = baseline_value
        self.max_batch = int(max_batch)
        self.backward = backward
        self.amp_dtype = autocast_dtype(amp_dtype)

    def attribute(self, images: torch.Tensor, targets: Sequence[Sequence[int]],
                  return_convergence_delta: bool = False
                  ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image ``i``, float32 ``(len(targets[i]), H, W)``: attributions summed over channels.

        With ``return_convergence_delta`` also, per image, ``(len(targets[i]),)`` completeness
        gaps: sum of the (channel-resolved) attributions minus ``logit(x) - logit(baseline)``.
        """
        targets = check_inputs(images, targets)
        device = model_device(self.model)
        x = images.detach().to(device=device, dtype=torch.float32)
        base = make_baseline(x, self.baseline, self.blur_sigma, self.baseline_value)
        with eval_mode_with_grad(self.model):
            grads = self._path_gradients(x, base, targets)  # (B, T, C, H, W)
            attr = grads * (x - base).unsqueeze(1)
            deltas = self._convergence_deltas(x, base, targets, attr) if return_convergence_delta else None
        maps = [attr[i, : len(t)].sum(dim=1).to(images.device) for i, t in enumerate(targets)]
        if deltas is None:
            return maps
        return maps, [d.to(images.device) for d in deltas]

    def _autocast(self, device: torch.device):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.amp_dtype)

    def _path_gradients(self, x: torch.Tensor, base: torch.Tensor,
                        targets: list[list[int]]) -> torch.Tensor:
        """Quadrature-weighted sum of input gradients along the path, ``(B, T_max, C, H, W)``."""
        n_images, steps = x.shape[0], self.steps
        t_max = max((len(t) for t in targets), default=0)
        total = torch.zeros((n_images, t_max, *x.shape[1:]), device=x.device, dtype=torch.float32)
        if t_max == 0:
            return total
        # (B, T_max) class index per target slot, -1 where an image has fewer targets.
        slots = torch.full((n_images, t_max), -1, dtype=torch.long)
        for i, tgt in enumerate(targets):
            slots[i, : len(tgt)] = torch.tensor(tgt, dtype=torch.long)
        slots = slots.to(x.device)
        alphas = self.alphas.to(device=x.device, dtype=torch.float32)
        weights = self.weights.to(device=x.device, dtype=torch.float32)
        n_elements = n_images * steps
        for start in range(0, n_elements, self.max_batch):
            stop = min(start + self.max_batch, n_elements)
            # slots used by this chunk's images, decided on the host (no device sync)
            n_slots = max(len(targets[i]) for i in range(start // steps, (stop - 1) // steps + 1))
            if n_slots == 0:
                continue
            element = torch.arange(start, stop, device=x.device)
            image, step = element // steps, element % steps
            a = alphas[step].view(-1, 1, 1, 1)
            path = (base[image] + a * (x[image] - base[image])).requires_grad_(True)
            with self._autocast(x.device):
                logits = self.model(path)
            logits = check_logits(logits, targets).float()
            grads = self._target_gradients(logits, path, slots[image, :n_slots])  # (n_slots, N, C, H, W)
            weighted = grads * weights[step].view(1, -1, 1, 1, 1)
            # Each image's steps are contiguous in the chunk: summed as slices, not with index_add_,
            # whose CUDA kernel adds with atomics in a varying order (labels not bit-reproducible).
            for i in range(start // steps, (stop - 1) // steps + 1):
                lo, hi = max(i * steps, start) - start, min((i + 1) * steps, stop) - start
                total[i, :n_slots] += weighted[:, lo:hi].sum(dim=1)
        return total

    def _target_gradients(self, logits: torch.Tensor, path: torch.Tensor,
                          slots: torch.Tensor) -> torch.Tensor:
        """d logit[n, slots[n, j]] / d path[n] for every slot ``j`` (-1: none): ``(T, N, C, H, W)``."""
        n, n_slots = slots.shape
        # one_hot[j, n] selects the logit of slot j of element n; all-zero where the slot is unused
        one_hot = torch.zeros((n, n_slots, logits.shape[1] + 1), device=logits.device, dtype=logits.dtype)
        one_hot.scatter_(2, torch.where(slots >= 0, slots, logits.shape[1]).unsqueeze(2), 1.0)
        one_hot = one_hot[..., :-1].transpose(0, 1).contiguous()
        if self.backward == "batched":
            (grads,) = torch.autograd.grad(logits, path, grad_outputs=one_hot, is_grads_batched=True)
            return grads
        return torch.stack([
            torch.autograd.grad(logits, path, grad_outputs=one_hot[j], retain_graph=j < n_slots - 1)[0]
            for j in range(n_slots)
        ])

    @torch.no_grad()
    def _convergence_deltas(self, x: torch.Tensor, base: torch.Tensor, targets: list[list[int]],
                            attr: torch.Tensor) -> list[torch.Tensor]:
        """Completeness gap per (image, target), with the same precision as the path forward."""
        ends = torch.cat([x, base])
        with self._autocast(x.device):
            logits = torch.cat([self.model(chunk).float() for chunk in ends.split(self.max_batch)])
        n = x.shape[0]
        out = []
        for i, tgt in enumerate(targets):
            idx = torch.tensor(tgt, dtype=torch.long, device=x.device)
            expected = logits[i, idx] - logits[n + i, idx]
            out.append(attr[i, : len(tgt)].flatten(1).sum(dim=1) - expected)
        return out
