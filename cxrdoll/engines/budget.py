"""Stop training after a wall-clock budget, validating the weights reached so far."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ignite.engine import Engine, Events

if TYPE_CHECKING:
    from monai.engines import Evaluator


class WallClockBudget:
    """Terminate the trainer once ``seconds`` have passed since it started (``None``: no limit).

    Stopping mid-epoch skips the epoch-end validation, so the validator is run once more first:
    ``metrics.json`` and the best ``model.pt`` then reflect the final weights.
    """

    def __init__(self, seconds: float | None, validator: "Evaluator | None" = None) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError(f"max_train_seconds must be positive or null, got {seconds}")
        self.seconds = seconds
        self.validator = validator
        self.start = 0.0
        self.exhausted = False

    def attach(self, engine: Engine) -> None:
        if self.seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _started(self, engine: Engine) -> None:
        self.start = time.monotonic()

    def _check(self, engine: Engine) -> None:
        if time.monotonic() - self.start < self.seconds:
            return
        self.exhausted = True
        engine.logger.info(f"wall-clock budget of {self.seconds:g} s spent at iteration {engine.state.iteration}")
        if self.validator is not None:
            self.validator.run(engine.state.epoch)
        engine.terminate()
