"""Checks and helpers every explainer shares, so they all accept and reject the same inputs."""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn


def check_inputs(images: torch.Tensor, targets: Sequence[Sequence[int]]) -> list[list[int]]:
    """Validate ``images (B, C, H, W)`` and one list of class indices per image; return plain int lists."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (B, C, H, W), got {shape}")
    if not images.is_floating_point():
        # Every explainer casts to float32: 8-bit pixels would reach the network as 0..255.
        dtype = str(images.dtype).replace("torch.", "")
        raise ValueError(f"images must be floating point, as the network takes them ([0, 1] for cxrdoll's), "
                         f"got {dtype} (8-bit: images.float() / 255)")
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
        raise ValueError(f"targets must be one list of class indices per image, e.g. [[2, 5], [3]] for two "
                         f"images, got {targets!r}")
    targets = list(targets)
    if any(_is_index(t) for t in targets):
        raise ValueError(f"targets must be one list of class indices per image, e.g. [[2, 5], [3]] for two "
                         f"images and [[2]] for one, got the flat list {targets!r}")
    if len(targets) != images.shape[0]:
        raise ValueError(f"got {len(targets)} target lists for {images.shape[0]} images")
    out = []
    for i, tgt in enumerate(targets):
        values = tgt.tolist() if isinstance(tgt, torch.Tensor) else tgt
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"image {i}: targets must be a list of class indices, got {tgt!r}")
        values = list(values)
        bad = [t for t in values if not _is_index(t)]
        if bad:
            # int() would truncate 2.7 to class 2 and read True as class 1: a silently wrong map.
            raise ValueError(f"image {i}: target {bad[0]!r} is not a class index (an integer, "
                             f"cxrdoll.constants.OBSERVATIONS order)")
        tgt = [int(t) for t in values]
        if any(t < 0 for t in tgt):
            raise ValueError(f"image {i}: negative target index in {tgt}")
        out.append(tgt)
    return out


def _is_index(value: object) -> bool:
    """An integer class index: Python or numpy ints, a 0-d integer tensor; not bool, float or str."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_logits(logits: object, targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """The model must return logits ``(N, K)``; every target must be one of the K outputs."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, num_classes), got {got}")
    num_classes = logits.shape[1]
    bad = sorted({t for tgt in targets for t in tgt if t >= num_classes})
    if bad:
        raise ValueError(f"target index {bad} out of range for a model with {num_classes} outputs")
    return logits


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (frozen BatchNorm statistics, no dropout); restores each module's own mode, so a
    module kept in eval inside a training model (a frozen BatchNorm) stays so."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def eval_mode_with_grad(model: nn.Module) -> Iterator[nn.Module]:
    """:func:`eval_mode` with gradients on (``monai.networks.utils.eval_mode`` turns them off,
    which explanations need)."""
    with eval_mode(model), torch.enable_grad():
        yield model


@contextmanager
def parameters_untouched(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters need no gradient inside (the input's is enough for the hooks); their
    ``requires_grad`` and ``.grad`` are as before afterwards."""
    saved = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    for p, _, _ in saved:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, requires_grad, grad in saved:
            p.requires_grad_(requires_grad)
            p.grad = grad


def autocast_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """Parse an AMP option: None/"fp32" (off), "bf16"/"bfloat16", "fp16"/"float16", or a torch dtype."""
    if value is None or isinstance(value, torch.dtype):
        return None if value == torch.float32 else value
    names = {
        "fp32": None, "float32": None, "none": None,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    }
    key = str(value).lower()
    if key not in names:
        raise ValueError(f"unknown AMP dtype {value!r}; expected one of {sorted(names)}")
    return names[key]
