"""Validation during training that never leaves the final weights unvalidated."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler


class ValidationEveryNAndLast(ValidationHandler):
    """MONAI's epoch-level ``ValidationHandler``, plus a validation after the final epoch.

    With ``max_epochs`` not a multiple of ``interval`` the last epochs were never validated: their
    weights could not become ``model.pt``, ``metrics.json`` did not state them, and with
    ``interval > max_epochs`` a run ended with no model at all.
    """

    def __init__(self, interval: int, validator=None) -> None:
        if int(interval) < 1:
            raise ValueError(f"val_interval must be a positive number of epochs, got {interval}")
        super().__init__(interval=int(interval), validator=validator, epoch_level=True)

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._after_final_epoch)

    def _after_final_epoch(self, engine: Engine) -> None:
        # (a wall-clock budget stop validates itself and ends the run before any EPOCH_COMPLETED)
        if engine.state.epoch == engine.state.max_epochs and engine.state.epoch % self.interval:
            self(engine)
