"""Multi-label CXR classifiers: a registered encoder followed by a pooling head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.networks.encoders import ENCODERS, FeatureEncoder, build_encoder


class ClassifierHead(nn.Module):
    """Global average pooling, dropout and a linear layer giving one logit per observation."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class Classifier(nn.Module):
    """``encoder`` (shared with the segmenter) + ``head``; returns logits ``(B, num_classes)``."""

    def __init__(self, encoder: FeatureEncoder, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClassifierHead(encoder.out_channels[-1], num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As the segmenter's: a loader's unbatched (1, H, W) image otherwise failed deep in a batch
        # norm ("expected 4D input (got 3D input)"), a uint8 one with "expected scalar type Byte".
        if not isinstance(x, torch.Tensor):  # else "'numpy.ndarray' object has no attribute 'dim'"
            raise TypeError("expected a torch tensor (B, C, H, W); a numpy image is torch.from_numpy(x)")
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) input, got shape {list(x.shape)} (one image: x[None])")
        if x.shape[1] != self.encoder.in_channels:
            raise ValueError(f"expected {self.encoder.in_channels} input channel(s), got {x.shape[1]} (shape {list(x.shape)})")
        if not x.is_floating_point():
            raise ValueError("expected a floating-point image in [0, 1], got an integer tensor (8-bit: x.float() / 255)")
        return self.head(self.encoder(x)[-1])

    def train(self, mode: bool = True) -> "Classifier":
        """As ``nn.Module.train``, but nothing to do when every module is in ``mode`` already.

        MONAI's trainer calls ``train()`` every iteration; setting DenseNet121's 501 modules one call
        each took 1.2 ms of host time per step on this repo's CPU, checking them 0.4 ms. Where the
        host's dispatch bounds a GPU step, that time adds to the step.
        """
        if all(module.training == mode for module in self.modules()):
            return self
        return super().train(mode)


# Registered architectures; the first entries are the paper's zoo of 17+ classifiers.
CLASSIFIER_NAMES: tuple[str, ...] = tuple(name for name, spec in ENCODERS.items() if spec.paper) + tuple(
    name for name, spec in ENCODERS.items() if not spec.paper
)
PAPER_CLASSIFIER_NAMES: tuple[str, ...] = tuple(name for name, spec in ENCODERS.items() if spec.paper)


def build_classifier(
    name: str, in_channels: int = 1, num_classes: int = len(OBSERVATIONS), dropout: float = 0.0, **kw: Any
) -> Classifier:
    """Build classifier ``name`` (see ``CLASSIFIER_NAMES``); extra keywords go to the MONAI constructor."""
    return Classifier(build_encoder(name, in_channels=in_channels, **kw), num_classes, dropout)
