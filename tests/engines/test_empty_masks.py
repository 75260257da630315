"""A segmentation run whose first epoch met no positive target pixel stops before validation."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events

from cxrdoll.engines.empty_masks import EmptyMasks, StopOnEmptyMasks


def _masks_engine(labels: list[torch.Tensor]) -> tuple[Engine, list[int]]:
    engine = Engine(lambda e, batch: {"label": batch})
    StopOnEmptyMasks().attach(engine)
    saved: list[int] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.state.epoch))
    return engine, saved


def test_a_first_epoch_without_a_positive_target_pixel_stops_before_validation():
    empty = [torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), math.nan)]  # NaN: channels that do not count
    engine, saved = _masks_engine(empty)
    with pytest.raises(EmptyMasks, match=r"no training mask of epoch 1 \(2 iterations\) has a positive pixel"):
        engine.run(empty, max_epochs=2)
    assert saved == []
    one = [torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)]
    one[1][1, 2, 0, 3] = 1.0
    engine, saved = _masks_engine(one)
    engine.run(one, max_epochs=2)
    assert saved == [1, 2]


def test_positive_pixels_of_every_iteration_count_not_only_the_last():
    """A positive pixel in the first batch alone keeps the run going though the last batch is empty."""
    first = [torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.full((1, 2, 3, 3), math.nan)]
    first[0][0, 1, 2, 2] = 1.0
    engine, saved = _masks_engine(first)
    engine.run(first, max_epochs=1)
    assert saved == [1]
