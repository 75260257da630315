"""Write per-image probabilities of an inference run to one CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.unreadable import readable
from cxrdoll.io import write_csv_atomic


class PredictionWriter:
    """Collect ``pred`` (probabilities, after the evaluator's postprocessing) per batch; write at the end.

    The CSV has ``id`` then one column per observation, and is written atomically once
    the run completes, so a partial file never looks like a finished one.
    """

    def __init__(self, output_file: str | Path, observations: Sequence[str] = OBSERVATIONS) -> None:
        self.output_file = Path(output_file)
        self.observations = tuple(observations)
        self.rows: list[tuple[str, list[float]]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        pred = torch.as_tensor(engine.state.output["pred"]).detach().float().cpu()
        ids = engine.state.batch["id"]
        if pred.ndim != 2 or pred.shape[1] != len(self.observations) or len(ids) != len(pred):
            raise ValueError(f"expected {len(ids)} predictions of {len(self.observations)} values, got {tuple(pred.shape)}")
        read = readable(engine.state.batch, len(ids))  # unreadable images are listed by UnreadableReport instead
        self.rows.extend((image_id, values) for image_id, values, ok in zip(ids, pred.tolist(), read) if ok)

    def write(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        write_csv_atomic(self.output_file, ["id", *self.observations],
                         ([image_id, *(f"{v:.6f}" for v in values)] for image_id, values in self.rows))
        engine.logger.info(f"wrote {len(self.rows)} predictions to {self.output_file}")
