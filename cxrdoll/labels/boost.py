"""Boost: sharpen what confident, agreeing classifiers point at.

Two independent knobs, both off when left at their defaults:
- confidence weighting multiplies each model's skill weight by its own probability for the
  observation on *this* image, raised to ``power`` (a model that barely sees the finding here
  should not decide where it is);
- agreement keeps only pixels where at least ``m`` models' soft maps reach ``threshold``
  (``m`` is capped at the number of models, so a single fallback model still yields a label).
"""

from __future__ import annotations

import torch

from cxrdoll.labels.distil import distil
from cxrdoll.labels.postprocess import check_maps


def confidence_weights(skill: torch.Tensor, probs: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``skill * probs**power``, renormalised; falls back to ``skill`` when every model has p = 0.
    Both are ``(K,)`` tensors or sequences of K numbers."""
    skill, probs = torch.as_tensor(skill, dtype=torch.float32), torch.as_tensor(probs, dtype=torch.float32)
    if skill.shape != probs.shape:
        raise ValueError(f"skill {tuple(skill.shape)} and probs {tuple(probs.shape)} must have the same shape")
    if power == 0:
        return skill / skill.sum()
    weights = skill * probs.to(skill.dtype).clamp(0.0, 1.0) ** power
    total = weights.sum()
    return skill / skill.sum() if total <= 0 else weights / total


def agreement_mask(maps: torch.Tensor, min_agree: int, threshold: float = 0.5) -> torch.Tensor:
    """Boolean ``(H, W)``: at least ``min(min_agree, K)`` of the ``(K, H, W)`` maps are ``>= threshold``."""
    if min_agree < 1:
        raise ValueError(f"min_agree must be >= 1, got {min_agree}")
    check_maps(maps)  # (H, W) would vote over rows and return one value per column
    votes = (maps >= threshold).sum(dim=0)
    return votes >= min(min_agree, maps.shape[0])


def boost(
    maps: torch.Tensor,
    skill: torch.Tensor,
    probs: torch.Tensor | None = None,
    confidence_power: float = 0.0,
    min_agree: int | None = None,
    agree_threshold: float = 0.5,
) -> torch.Tensor:
    """Distil ``(K, H, W)`` maps with confidence-boosted weights, then apply the agreement rule."""
    weights = skill if probs is None else confidence_weights(skill, probs, confidence_power)
    fused = distil(maps, weights)
    if min_agree is not None:
        fused = fused * agreement_mask(maps, min_agree, agree_threshold).to(fused.dtype)
    return fused
