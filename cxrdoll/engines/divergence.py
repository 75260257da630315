"""Stop a training run whose weights have stopped being finite, before anything saves them.

A learning rate set too high makes the loss, then every weight, NaN within a few iterations.
Without a check the run went on to its last epoch and exited 0: its NaN network became the "best"
model, ``metrics.json`` held NaN, and the labeller met the broken checkpoint hours later. Reading
the loss every iteration would make the host wait for the GPU (issue 3), so the weights (and
floating buffers, BatchNorm's running statistics) are checked at the iterations the loss is
logged anyway and at each epoch's end, before validation and the resume checkpoint run. Weights,
not the loss, decide: with fp16 the grad scaler skips a step whose gradients overflowed and the
weights stay finite, and such a run recovers.
"""

from __future__ import annotations

import math

import torch
from ignite.engine import Engine, Events

from cxrdoll.engines.progress import log_interval


class TrainingDiverged(ValueError):
    """The weights are no longer finite: a setting (usually the learning rate) is to blame, not the data."""


def weights_are_finite(network: torch.nn.Module) -> bool:
    """Whether every parameter and floating buffer of ``network`` is finite (one device read)."""
    tensors = [p.detach() for p in network.parameters()] + [b for b in network.buffers() if b.is_floating_point()]
    if not tensors:
        return True
    largest = torch.nn.utils.get_total_norm(tensors, norm_type=math.inf)  # NaN propagates through the max
    return bool(torch.isfinite(largest))


class StopOnDivergence:
    """Trainer handler: raise :class:`TrainingDiverged` at the first check that finds non-finite weights.

    Attach it before validation and the checkpoint handler, so that an epoch that diverged is
    neither validated nor saved: the best model and the last checkpoint stay the last finite ones.
    """

    def __init__(self, every: int = 20) -> None:
        self.every = log_interval(every)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), raise_if_diverged)
        engine.add_event_handler(Events.EPOCH_COMPLETED, raise_if_diverged)


def raise_if_diverged(engine: Engine) -> None:
    """:class:`TrainingDiverged` if the trainer's weights are no longer finite. Also called by the
    wall-clock budget before its last validation, which may fall between two of the checks."""
    if weights_are_finite(engine.network):
        return
    rates = sorted({group["lr"] for group in engine.optimizer.param_groups})
    rate = " and ".join(f"{r:g}" for r in rates)
    raise TrainingDiverged(
        f"training diverged: the network's weights were no longer finite at epoch {engine.state.epoch}, "
        f"iteration {engine.state.iteration} (learning rate now {rate}); this epoch was neither validated "
        "nor saved. Start over with a lower learning_rate")
