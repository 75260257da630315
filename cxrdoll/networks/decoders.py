"""Decoders that turn a ``FeatureEncoder``'s five feature maps into a dense feature map.

Each decoder is a ``ModuleList`` of ``DecoderStage``s; every stage ends in an ``adapter`` slot
(``nn.Identity`` until ``cxrdoll.networks.adapters.add_adapters`` fills it), so adapters can be
inserted after each stage without changing the decoder's own state-dict keys.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

_NORM = ("batch", {"eps": 1e-3, "momentum": 0.1})
_ACT = ("relu", {"inplace": True})


class DecoderStage(nn.Module):
    """One U-Net step: 1x1 reduce, upsample by 2, concatenate the skip map, two 3x3 convs, adapter slot.

    MONAI FlexibleUNet's decoder step (nearest upsampling after a 1x1 pre-conv), written out so that
    ``torch.compile(fullgraph=True)`` traces it and the adapter slot sits after it. One difference:
    the 1x1 conv is kept where the width does not halve (FlexibleUNet's last stage has none there);
    dropping it now would break every saved checkpoint.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, halves: bool, dropout: float) -> None:
        super().__init__()
        up_channels = in_channels // 2 if halves else in_channels
        self.reduce = nn.Conv2d(in_channels, up_channels, kernel_size=1)
        conv = {"act": _ACT, "norm": _NORM, "dropout": dropout, "bias": False}
        self.convs = nn.Sequential(
            Convolution(2, skip_channels + up_channels, out_channels, **conv),
            Convolution(2, out_channels, out_channels, **conv),
        )
        self.adapter: nn.Module = nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor]) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([skip, x], dim=1)
        return self.adapter(self.convs(x))


class UNetDecoder(nn.Module):
    """FlexibleUNet-style decoder: stride 32 back to stride 1, with skips at strides 16, 8, 4 and 2."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != len(encoder_channels):
            raise ValueError(
                f"decoder_channels needs {len(encoder_channels)} entries (one per encoder stage), "
                f"got {list(decoder_channels)}"
            )
        in_channels = [encoder_channels[-1], *decoder_channels[:-1]]
        skip_channels = [*reversed(encoder_channels[:-1]), 0]
        halves = [True] * (len(decoder_channels) - 1) + [False]
        self.stages = nn.ModuleList(
            DecoderStage(i, s, o, h, dropout)
            for i, s, o, h in zip(in_channels, skip_channels, decoder_channels, halves)
        )
        self.out_channels = int(decoder_channels[-1])
        self.output_stride = 1

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        n_skips = len(features) - 1
        for i, stage in enumerate(self.stages):
            skip: Optional[torch.Tensor] = None
            if i < n_skips:
                skip = features[n_skips - 1 - i]
            x = stage(x, skip)
        return x


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: pool to several grids, project, upsample, concatenate with the input."""

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        branch_channels = max(in_channels // len(bins), 1)
        self.bins = list(bins)
        self.branches = nn.ModuleList(
            # no normalisation: the 1x1 bin holds one value per channel, which batch norm rejects at batch size 1
            Convolution(2, in_channels, branch_channels, kernel_size=1, act=_ACT, norm=None, bias=True)
            for _ in bins
        )
        self.out_channels = in_channels + branch_channels * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [x]
        for i, branch in enumerate(self.branches):
            y = branch(F.adaptive_avg_pool2d(x, self.bins[i]))
            pooled.append(F.interpolate(y, size=[int(size[0]), int(size[1])], mode="bilinear", align_corners=False))
        return torch.cat(pooled, dim=1)


class PSPStage(nn.Module):
    """Pyramid pooling on the stride-32 map, then a 3x3 projection; ends in an adapter slot."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.ppm = PyramidPooling(in_channels)
        self.project = Convolution(
            2, self.ppm.out_channels, out_channels, kernel_size=3, act=_ACT, norm=_NORM, dropout=dropout, bias=False
        )
        self.adapter: nn.Module = nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor]) -> torch.Tensor:
        return self.adapter(self.project(self.ppm(x)))


class FuseStage(nn.Module):
    """Upsample the pooled context to stride 8 and fuse it with the encoder's stride-8 map.

    PSPNet pools a stride-8 (dilated) backbone; our encoders end at stride 32, so the stride-8 map
    restores the spatial detail the original gets from dilation. Every encoder stage stays in use.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.fuse = Convolution(
            2, in_channels + skip_channels, out_channels, act=_ACT, norm=_NORM, dropout=dropout, bias=False
        )
        self.adapter: nn.Module = nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor]) -> torch.Tensor:
        if skip is None:
            raise ValueError("FuseStage needs the stride-8 encoder map")
        x = F.interpolate(x, size=[int(skip.shape[-2]), int(skip.shape[-1])], mode="bilinear", align_corners=False)
        return self.adapter(self.fuse(torch.cat([x, skip], dim=1)))


class PSPDecoder(nn.Module):
    """PSPNet-style head: pyramid pooling at stride 32, fused with stride 8; output at stride 8."""

    def __init__(self, encoder_channels: Sequence[int], channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [
                PSPStage(encoder_channels[-1], channels, dropout),
                FuseStage(channels, encoder_channels[2], channels, 0.0),
            ]
        )
        self.out_channels = channels
        self.output_stride = 8

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for stage in self.stages:
            x = stage(x, features[2])
        return x
