"""Segmenters: a registered encoder (same keys as the classifier) + a decoder + a conv head."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.networks.decoders import PSPDecoder, UNetDecoder
from cxrdoll.networks.encoders import STRIDES, FeatureEncoder, build_encoder

DECODERS: tuple[str, ...] = ("unet", "psp")
# Input sides must be multiples of the deepest stride, so that every skip map lines up exactly.
SIZE_DIVISOR: int = STRIDES[-1]


class Segmenter(nn.Module):
    """``encoder`` -> ``decoder`` -> ``head``; returns logits ``(B, out_channels, H, W)`` at input size."""

    def __init__(
        self, encoder: FeatureEncoder, decoder: nn.Module, out_channels: int, head_kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = make_head(int(decoder.out_channels), out_channels, head_kernel_size)
        self.in_channels = encoder.in_channels
        self.output_stride = int(decoder.output_stride)
        self.size_divisor = SIZE_DIVISOR
        self._frozen: tuple[tuple, list[nn.Module]] = ((), [])  # (which parameters train, the frozen parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):  # else "'numpy.ndarray' object has no attribute 'dim'"
            raise TypeError("expected a torch tensor (B, C, H, W); a numpy image is torch.from_numpy(x)")
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) input, got shape {list(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channel(s), got {x.shape[1]} (shape {list(x.shape)})")
        if not x.is_floating_point():  # else "expected scalar type Byte but found Float" from the first conv
            raise ValueError("expected a floating-point image in [0, 1], got an integer tensor (8-bit: x.float() / 255)")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % self.size_divisor != 0 or w % self.size_divisor != 0:
            raise ValueError(
                f"input size {h}x{w} is not divisible by {self.size_divisor}; "
                f"resize or pad it (e.g. DivisiblePadd(k={self.size_divisor}))"
            )
        y = self.head(self.decoder(self.encoder(x)))
        if self.output_stride != 1:
            y = F.interpolate(y, size=[h, w], mode="bilinear", align_corners=False)
        return y

    def train(self, mode: bool = True) -> "Segmenter":
        """Like ``nn.Module.train``, but a frozen part (every parameter of a module frozen) stays in
        eval mode: its batch norms keep their statistics, and its dropout and EfficientNet's
        drop-connect stop, so the adapters and head train on the features they are evaluated on."""
        super().train(mode)
        if mode:
            for part in self._frozen_parts():
                part.eval()
        return self

    def _frozen_parts(self) -> list[nn.Module]:
        """The largest frozen parts, found again only when which parameters train changed: MONAI's
        trainers call ``train()`` every iteration."""
        key = tuple((id(p), p.requires_grad) for p in self.parameters())
        if key != self._frozen[0]:
            parts: list[nn.Module] = []
            _collect_frozen(self, _freezing(self), parts)
            self._frozen = (key, parts)
        return self._frozen[1]


def _freezing(root: nn.Module) -> dict[nn.Module, tuple[bool, bool]]:
    """Per module: (has parameters, all of them frozen), counting its descendants'."""
    state: dict[nn.Module, tuple[bool, bool]] = {}
    for module in reversed(list(root.modules())):  # descendants before their ancestors
        own = list(module.parameters(recurse=False))
        has, frozen = bool(own), not any(p.requires_grad for p in own)
        for child in module.children():
            child_has, child_frozen = state[child]
            has, frozen = has or child_has, frozen and (child_frozen or not child_has)
        state[module] = (has, frozen)
    return state


def _collect_frozen(module: nn.Module, state: dict[nn.Module, tuple[bool, bool]], parts: list[nn.Module]) -> None:
    """Each largest frozen part (its ``eval()`` also reaches what has no parameters, a Dropout)."""
    if state[module] == (True, True):
        parts.append(module)
        return
    for child in module.children():
        _collect_frozen(child, state, parts)


def make_head(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    """The per-pixel classification conv; ``replace_head`` builds the downstream one the same way."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def build_segmenter(
    encoder_name: str,
    decoder: str = "unet",
    out_channels: int = len(OBSERVATIONS),
    in_channels: int = 1,
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    psp_channels: int = 256,
    dropout: float = 0.0,
    **kw: Any,
) -> Segmenter:
    """Build a segmenter on registered encoder ``encoder_name``; extra keywords go to the encoder.

    ``decoder_channels`` sizes the U-Net stages, ``psp_channels`` the PSP stages.
    """
    encoder = build_encoder(encoder_name, in_channels=in_channels, **kw)
    if decoder == "unet":
        dec: nn.Module = UNetDecoder(encoder.out_channels, decoder_channels, dropout)
    elif decoder == "psp":
        dec = PSPDecoder(encoder.out_channels, psp_channels, dropout)
    else:
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {list(DECODERS)}")
    return Segmenter(encoder, dec, out_channels)
