"""Parameter-efficient fine-tuning: adapters after the decoder stages, a new head, and freezing."""

from __future__ import annotations

import torch
from torch import nn

from cxrdoll.networks.segmenter import Segmenter, make_head

# Fine-tuning modes of the cxr_seg_adapter bundle (docs/FORMATS.md).
MODES: tuple[str, ...] = ("adapters", "full", "head", "scratch")


class Adapter(nn.Module):
    """Residual bottleneck ``x + up(relu(down(x)))``; ``up`` starts at zero, so the block starts as identity."""

    def __init__(self, channels: int, reduction: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.down = nn.Conv2d(channels, hidden, kernel_size, padding=kernel_size // 2, bias=False)
        self.act = nn.ReLU()
        self.up = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


def add_adapters(segmenter: Segmenter, reduction: int = 4, kernel_size: int = 3) -> list[str]:
    """Fill every decoder stage's adapter slot; returns the new modules' names. Outputs are unchanged."""
    names = []
    for i, stage in enumerate(segmenter.decoder.stages):
        if not isinstance(stage.adapter, nn.Identity):
            raise ValueError(f"decoder stage {i} already has an adapter")
        ref = next(stage.parameters())
        stage.adapter = Adapter(stage.out_channels, reduction, kernel_size).to(device=ref.device, dtype=ref.dtype)
        names.append(f"decoder.stages.{i}.adapter")
    return names


def has_adapters(segmenter: Segmenter) -> bool:
    return any(isinstance(stage.adapter, Adapter) for stage in segmenter.decoder.stages)


def replace_head(segmenter: Segmenter, out_channels: int) -> nn.Module:
    """Swap in a freshly initialised head with ``out_channels`` outputs (downstream classes)."""
    old = segmenter.head
    segmenter.head = make_head(old.in_channels, out_channels, old.kernel_size[0]).to(
        device=old.weight.device, dtype=old.weight.dtype
    )
    return segmenter.head


def configure_trainable(segmenter: Segmenter, mode: str = "adapters", freeze_decoder: bool = False) -> int:
    """Set ``requires_grad`` for a fine-tuning mode; returns the trainable-parameter count.

    - ``adapters``: encoder frozen (decoder too if ``freeze_decoder``); adapters and head train.
    - ``head``: only the head trains.
    - ``full`` / ``scratch``: everything trains (they differ in initialisation, not here).
    Frozen batch norms keep their running statistics (see ``Segmenter.train``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)}")
    if mode == "adapters" and not has_adapters(segmenter):
        raise ValueError("mode 'adapters' needs adapters: call add_adapters() first")
    segmenter.requires_grad_(mode in ("full", "scratch"))
    if mode == "adapters":
        segmenter.decoder.requires_grad_(not freeze_decoder)
        for stage in segmenter.decoder.stages:
            stage.adapter.requires_grad_(True)
    segmenter.head.requires_grad_(True)
    segmenter.train(segmenter.training)  # re-apply the frozen-BN rule to the current mode
    return count_trainable_parameters(segmenter)


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of parameter elements that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
