"""Train to a wall-clock budget: stop when it is spent, and anneal the learning rate over it."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from cxrdoll.distributed import broadcast_float
from cxrdoll.engines.divergence import raise_if_diverged

if TYPE_CHECKING:
    from monai.engines import Evaluator


class _TimedFromStart:
    """A trainer handler on ``event``, timed from the run's start; ``seconds`` None: not attached."""

    event = Events.ITERATION_COMPLETED

    def __init__(self, seconds: float | None, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError(f"{name} must be positive or null, got {seconds}")
        self.seconds, self.clock, self.start = seconds, clock, 0.0

    def attach(self, engine: Engine) -> None:
        if self.seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(self.event, self.on_event)

    def _started(self, engine: Engine) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        """Seconds since the start; under DDP rank 0's, so that every rank stops at the same iteration
        (one stopping early would leave the others waiting in a collective) and anneals alike. Sent
        through the CPU host group: over NCCL, reading it back would wait for the queued GPU work."""
        local = self.clock() - self.start
        return broadcast_float(local, src=0) if idist.get_world_size() > 1 else local

    def on_event(self, engine: Engine) -> None:
        raise NotImplementedError


class WallClockBudget(_TimedFromStart):
    """Terminate the trainer once ``seconds`` have passed since it started (``None``: no limit).

    Stopping mid-epoch skips the epoch-end validation, so the validator is run once more first:
    ``metrics.json`` and the best ``model.pt`` then reflect the final weights.
    """

    def __init__(self, seconds: float | None, validator: "Evaluator | None" = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(seconds, "max_train_seconds", clock)
        self.validator = validator

    def on_event(self, engine: Engine) -> None:
        if self.elapsed() < self.seconds:
            return
        engine.logger.info(f"wall-clock budget of {self.seconds:g} s spent at iteration {engine.state.iteration}")
        if self.validator is not None:
            if hasattr(engine, "network"):  # a trainer: the stop may fall between two divergence checks
                raise_if_diverged(engine)
            self.validator.run(engine.state.epoch)
        engine.terminate()


class WallClockCosineLR(_TimedFromStart):
    """Anneal the learning rate to zero over a wall-clock budget instead of a number of epochs.

    Before every iteration each parameter group's rate becomes its starting rate times
    ``(1 + cos(pi * t / seconds)) / 2``, ``t`` the time since the trainer started (at most
    ``seconds``). A budget then fits any machine: a fast one trains more epochs, a slow one fewer,
    and both end annealed as ``WallClockBudget`` stops them (two epochs were right on one CPU and
    too few on a 2.2x faster one). Pair it with a constant epoch scheduler; ``None``: no-op.
    """

    event = Events.ITERATION_STARTED

    def __init__(self, optimizer: torch.optim.Optimizer, seconds: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(seconds, "the learning-rate budget", clock)
        self.optimizer = optimizer
        self.initial = [group["lr"] for group in optimizer.param_groups]

    def on_event(self, engine: Engine) -> None:
        progress = min(1.0, self.elapsed() / self.seconds)
        for group, initial in zip(self.optimizer.param_groups, self.initial):
            group["lr"] = initial * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_scheduler(optimizer: torch.optim.Optimizer, schedule: str, max_epochs: int,
                    seconds: float | None) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch scheduler for the bundle's ``lr_schedule``.

    ``epochs``: cosine over ``max_epochs``. ``time``: constant per epoch, because
    ``WallClockCosineLR`` anneals over ``seconds`` (``max_train_seconds``, which it needs).
    """
    if schedule == "epochs":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    if schedule == "time":
        if seconds is None:
            raise ValueError("lr_schedule 'time' anneals over max_train_seconds: set it too")
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"lr_schedule must be 'epochs' or 'time', got {schedule!r}")
