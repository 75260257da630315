"""A hand-built classifier with a known answer: class 0 fires on a bright square, class 1 on a dark one."""

from __future__ import annotations

import torch
from torch import nn

SIZE = 32
BRIGHT = (4, 10)   # top-left (y, x) of the 6x6 bright square
DARK = (20, 18)    # top-left (y, x) of the 6x6 dark square
SIDE = 6


class SquareDetector(nn.Module):
    """5x5 local mean -> two thresholded detectors -> average pool -> logits (class 0 bright, class 1 dark)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 5, padding=2, padding_mode="replicate")  # no dark rim at the border
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight[0].fill_(1 / 25)   # bright: mean - 0.75
            self.conv.bias[0] = -0.75
            self.conv.weight[1].fill_(-1 / 25)  # dark: 0.25 - mean
            self.conv.bias[1] = 0.25
            self.head.weight.copy_(torch.tensor([[50.0, 0.0], [0.0, 50.0]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.act(self.conv(x))).flatten(1))


def planted_images(n: int = 2) -> torch.Tensor:
    """Grey images with the bright and dark squares; image k shifts both squares by k pixels."""
    images = torch.full((n, 1, SIZE, SIZE), 0.5)
    for k in range(n):
        images[k, 0, BRIGHT[0] + k : BRIGHT[0] + k + SIDE, BRIGHT[1] + k : BRIGHT[1] + k + SIDE] = 1.0
        images[k, 0, DARK[0] + k : DARK[0] + k + SIDE, DARK[1] + k : DARK[1] + k + SIDE] = 0.0
    return images


def square_mask(corner: tuple[int, int], shift: int, margin: int = 2) -> torch.Tensor:
    """Boolean (SIZE, SIZE) mask of a square grown by ``margin`` pixels (the detector's reach)."""
    mask = torch.zeros((SIZE, SIZE), dtype=torch.bool)
    y, x = corner[0] + shift - margin, corner[1] + shift - margin
    mask[max(y, 0) : y + SIDE + 2 * margin, max(x, 0) : x + SIDE + 2 * margin] = True
    return mask
