"""Training feedback that does not stall the GPU: loss logging and a progress bar every N iterations.

Reading the loss (``loss.item()``) makes the host wait until the device has finished the
iteration, so the next iteration's kernels are queued only after the GPU has gone idle. Each
logging handler did that on every iteration; here they share one interval, ``log_every``.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import StatsHandler as MonaiStatsHandler
from monai.handlers import TensorBoardStatsHandler as MonaiTensorBoardStatsHandler

from cxrdoll.errors import show_traceback, user_error


def loss_value(output: dict[str, Any]) -> float:
    """The iteration's loss as a number, for the logging handlers' ``output_transform`` (a device read)."""
    return output["loss"].item()


def log_interval(n: int) -> int:
    """``n`` as a logging interval in iterations; refused unless positive."""
    if int(n) < 1:
        raise ValueError(f"log_every must be a positive number of iterations, got {n}")
    return int(n)


def every_n_iterations(n: int) -> Callable[[Engine, int], bool]:
    """Event filter for MONAI's ``StatsHandler``/``TensorBoardStatsHandler`` ``iteration_log``: every ``n``-th."""
    n = log_interval(n)
    return lambda engine, event: event % n == 0


class LossProgressBar:
    """A tqdm bar over the epoch's iterations, advanced (and the loss shown) every ``every`` iterations.

    Attachable from a bundle config (MONAI handlers take ``attach(engine)`` with no options).
    """

    def __init__(self, every: int = 1, persist: bool = False) -> None:
        self.every = log_interval(every)
        self.bar = ProgressBar(persist=persist)

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=lambda output: {"loss": loss_value(output)},
                        event_name=Events.ITERATION_COMPLETED(every=self.every))


class StatsHandler(MonaiStatsHandler):
    """MONAI's ``StatsHandler``, except that a user error (bad input, a refused resume) is not logged
    with its traceback: the bundle's exception hook prints it once, in one line. Bugs keep it."""

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        if user_error(e) is None or show_traceback():
            super().exception_raised(engine, e)
        raise e


class TensorBoardStatsHandler(MonaiTensorBoardStatsHandler):
    """MONAI's handler, with what it logged written out when its engine completes, and its writer
    closed when the handler is freed or at exit, whichever comes first.

    Its SummaryWriter writes queued scalars every 120 s and at close, and nothing closed it: a run
    shorter than that left no training loss in TensorBoard, a longer one (or a crash) lost its last
    two minutes. Validation scalars survived only because MONAI flushes after each epoch's. Closing
    when freed also ends the writer's thread and file after an in-process run (each run of a sweep).
    """

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.COMPLETED, lambda _: self._writer.flush())
        if self.internal_writer:  # a writer passed in is its owner's to close, as in MONAI's ``close``
            # holds the writer, not the handler; also runs at exit: a crash or Ctrl-C ends before COMPLETED
            weakref.finalize(self, self._writer.close)
