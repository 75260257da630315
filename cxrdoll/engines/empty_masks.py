"""Stop a segmentation run whose first epoch met no positive pixel in any training mask.

Masks that are all empty (a labeller whose binarisation no map reached, a mask folder of the wrong
polarity, or masks saved as 0/1 where 0/255 was read) trained a network to predict nothing, with
a NaN validation Dice and exit 0. Positive target pixels are counted on the device during the
first epoch (no wait for it) and read once at its end, before validation and the checkpoint.
"""

from __future__ import annotations

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events


class EmptyMasks(ValueError):
    """Every training mask of the first epoch is empty: the data, not the model, is at fault."""


class StopOnEmptyMasks:
    """Trainer handler: raise :class:`EmptyMasks` after a first epoch without a positive target pixel.

    Attach it before validation and the checkpoint handler. Targets are the trainer output's
    ``label`` (NaN where a channel does not count). A resumed run, which starts past epoch 1, is
    not checked again.
    """

    def __init__(self) -> None:
        self.positives: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check)

    def count(self, engine: Engine) -> None:
        if engine.state.epoch != 1:
            return
        found = (engine.state.output["label"].detach() > 0.5).sum()  # NaN compares False
        self.positives = found if self.positives is None else self.positives + found

    def check(self, engine: Engine) -> None:
        if engine.state.epoch != 1 or self.positives is None:
            return
        total = idist.all_reduce(self.positives.clone()) if idist.get_world_size() > 1 else self.positives
        if int(total) == 0:
            raise EmptyMasks(f"no training mask of epoch 1 ({engine.state.iteration} iterations) has a positive pixel: "
                             "the network would learn to predict nothing. Check the datalist's masks (0/255 or 0/1 "
                             "PNGs; DoLL labels whose positive masks all came out empty)")
        self.positives = None
