"""Distil: one map per observation from the maps of its selected classifiers, weighted by skill.

Better classifiers (higher validation AUROC) get a larger say; ``auroc_excess`` weights by the
margin over chance, so a model at AUROC 0.55 counts far less than one at 0.95.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

WEIGHT_SCHEMES = ("auroc_excess", "auroc", "uniform")


def skill_weights(aurocs: Sequence[float], scheme: str = "auroc_excess") -> torch.Tensor:
    """Normalised weights (sum 1) from validation AUROCs; unknown (NaN or None) AUROCs count as chance."""
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown weight scheme {scheme!r}; expected one of {WEIGHT_SCHEMES}")
    if len(aurocs) == 0:
        raise ValueError("skill_weights needs at least one AUROC")
    values = [0.5 if a is None or math.isnan(a) else float(a) for a in aurocs]  # None: classifiers.json's null
    if scheme == "uniform":
        raw = [1.0] * len(values)
    elif scheme == "auroc":
        raw = [max(v, 0.0) for v in values]
    else:
        raw = [max(v - 0.5, 0.0) for v in values]
    weights = torch.tensor(raw, dtype=torch.float32)
    total = weights.sum()
    if total <= 0:  # every model at or below chance: no reason to prefer any
        return torch.full((len(values),), 1.0 / len(values))
    return weights / total


def distil(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of ``(K, H, W)`` soft maps -> ``(H, W)``; weights (a tensor or a sequence of K
    numbers) need not be normalised."""
    if not isinstance(maps, torch.Tensor):
        raise ValueError(f"maps must be a torch tensor (K, H, W), got {type(maps).__name__}")
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if maps.ndim != 3 or weights.shape != (maps.shape[0],):
        raise ValueError(f"maps (K, H, W) and weights (K,) must agree, got {tuple(maps.shape)} and {tuple(weights.shape)}")
    weights = weights.to(device=maps.device, dtype=torch.float32)
    total = weights.sum()
    if total <= 0:
        raise ValueError(f"distillation weights must have a positive sum, got {weights.tolist()}")
    return torch.einsum("k,khw->hw", weights / total, maps.to(torch.float32))
