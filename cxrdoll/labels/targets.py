"""Which observations of an image get a label, and how the pre-training loss treats each channel.

``state`` per channel: 1 = positive, the mask is a target; 0 = negative, an empty target;
-1 = ignored by the loss (uncertain, unknown, or not localisable such as "No Finding").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cxrdoll.constants import LOCALISABLE_OBSERVATIONS, OBSERVATIONS

POLICIES = ("positives", "positives_uncertain", "ensemble_predicted")
_LOCALISABLE = np.array([o in LOCALISABLE_OBSERVATIONS for o in OBSERVATIONS])


def raw_labels(item: dict) -> list[float | None]:
    """The item's ``raw_label`` (1 / 0 / -1 / null) checked for length; errors name the item."""
    raw = item.get("raw_label")
    if raw is None:
        raise ValueError(f"datalist item {item.get('id', item.get('image'))!r} has no 'raw_label'")
    if len(raw) != len(OBSERVATIONS):
        raise ValueError(
            f"datalist item {item.get('id', item.get('image'))!r}: raw_label has {len(raw)} values, expected {len(OBSERVATIONS)}"
        )
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v) for v in raw]


def is_unlabelled(raw: Sequence[float | None]) -> bool:
    return all(v is None for v in raw)


def label_state(
    raw: Sequence[float | None],
    policy: str = "positives",
    ensemble_probs: Sequence[float] | None = None,
    predict_threshold: float = 0.5,
) -> np.ndarray:
    """int8 ``(14,)`` state for one image under ``policy``.

    - ``positives``: 1 where raw is 1; 0 where raw is 0; else -1.
    - ``positives_uncertain``: as above, and uncertain (-1) also becomes a target.
    - ``ensemble_predicted``: as ``positives`` for labelled images; for an unlabelled image (every
      raw value blank) the ensemble's mean probability >= ``predict_threshold`` makes a target.
    Non-localisable observations are always -1.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown target policy {policy!r}; expected one of {POLICIES}")
    # 13 values (No Finding left out) would shift every observation onto its neighbour's channel.
    if len(raw) != len(OBSERVATIONS):
        raise ValueError(f"raw labels must hold {len(OBSERVATIONS)} values in OBSERVATIONS order, got {len(raw)}")
    if ensemble_probs is not None and len(ensemble_probs) != len(OBSERVATIONS):
        raise ValueError(f"ensemble_probs must hold {len(OBSERVATIONS)} probabilities in OBSERVATIONS order, "
                         f"got {len(ensemble_probs)}")
    state = np.full(len(OBSERVATIONS), -1, dtype=np.int8)
    if policy == "ensemble_predicted" and is_unlabelled(raw):
        if ensemble_probs is None:
            raise ValueError("policy 'ensemble_predicted' needs the ensemble's probabilities for unlabelled images")
        state[np.asarray(ensemble_probs, dtype=np.float64) >= predict_threshold] = 1
    else:
        for c, v in enumerate(raw):
            if v == 1 or (v == -1 and policy == "positives_uncertain"):
                state[c] = 1
            elif v == 0:
                state[c] = 0
    state[~_LOCALISABLE] = -1
    return state


def target_indices(state: np.ndarray) -> list[int]:
    """Channels to explain: those whose state is 1."""
    return [int(c) for c in np.flatnonzero(state == 1)]
