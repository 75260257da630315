"""BCE over the labels a study actually has: uncertain and unknown entries (NaN) carry no gradient."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy with logits, averaged over the labelled entries only.

    ``target`` holds 0/1 where the label counts and NaN where it is ignored (see
    ``cxrdoll.data.classification.MaskLabelsd``), so one tensor carries both label and mask
    through MONAI's engines. ``pos_weight`` (one weight per observation) up-weights positives
    of rare findings, as in ``torch.nn.BCEWithLogitsLoss``.
    """

    def __init__(self, pos_weight: Sequence[float] | Mapping[str, float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", None if pos_weight is None else checked_pos_weight(pos_weight),
                             persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        if self.pos_weight is not None and self.pos_weight.numel() != logits.shape[-1]:
            raise ValueError(f"pos_weight has {self.pos_weight.numel()} weights for {logits.shape[-1]} observations")
        if self.pos_weight is not None and self.pos_weight.device != logits.device:
            self.pos_weight = self.pos_weight.to(logits.device)  # once: MONAI's trainers never move the loss
        mask = ~torch.isnan(target)
        per_entry = F.binary_cross_entropy_with_logits(
            logits.float(), torch.nan_to_num(target.float(), nan=0.0), pos_weight=self.pos_weight, reduction="none"
        )
        counted = mask.sum()
        # A batch with no labelled entry gives a zero loss that still keeps the graph connected.
        return (per_entry * mask).sum() / counted.clamp(min=1)


def checked_pos_weight(pos_weight: Sequence[float] | Mapping[str, float] | torch.Tensor) -> torch.Tensor:
    """One finite, non-negative weight per observation; ``{observation: weight}`` weights those
    named (CheXpert names) and leaves the others at 1. A negative weight rewards missing positives."""
    from cxrdoll.constants import OBSERVATIONS

    if isinstance(pos_weight, Mapping):
        unknown = sorted(set(pos_weight) - set(OBSERVATIONS))
        if unknown:
            raise ValueError(f"pos_weight names {unknown}, not CheXpert observations {list(OBSERVATIONS)}")
        pos_weight = [pos_weight.get(name, 1.0) for name in OBSERVATIONS]
    try:
        weight = torch.as_tensor(pos_weight, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"pos_weight {pos_weight!r}: expected one number per observation ({err})") from None
    if weight.ndim != 1:
        raise ValueError(f"pos_weight must be one weight per observation, got shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all() or (weight < 0).any():
        raise ValueError(f"pos_weight {weight.tolist()}: every weight must be a finite number >= 0")
    return weight
