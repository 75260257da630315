"""PredictionWriter: one CSV row per readable image, probabilities to 6 decimals, written once the run completes."""

from __future__ import annotations

import csv

import pytest
import torch
from ignite.engine import Engine

from cxrdoll.engines.predictions import PredictionWriter


def _predict() -> Engine:
    """An evaluator whose output is each batch's ``pred``, as the inference bundle's postprocessing leaves it."""
    return Engine(lambda engine, batch: {"pred": batch["pred"]})


def test_rows_are_the_readable_images_in_order_with_six_decimals(tmp_path):
    batches = [{"id": ["a.png", "b.png"], "pred": torch.tensor([[0.25, 1 / 3], [0.5, 0.0]]), "load_error": ["", "bad"]},
               {"id": ["c.png"], "pred": torch.tensor([[2 / 3, 1.0]])}]
    engine = _predict()
    writer = PredictionWriter(tmp_path / "out" / "predictions.csv", observations=("Edema", "Pneumonia"))
    writer.attach(engine)
    for _ in range(2):  # a second run starts its rows afresh
        engine.run(batches, max_epochs=1)
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["id", "Edema", "Pneumonia"], ["a.png", "0.250000", "0.333333"], ["c.png", "0.666667", "1.000000"]]


def test_a_prediction_of_another_width_is_refused(tmp_path):
    engine = _predict()
    PredictionWriter(tmp_path / "p.csv", observations=("Edema",)).attach(engine)
    with pytest.raises(ValueError, match=r"^expected 1 predictions of 1 values, got \(1, 2\)$"):
        engine.run([{"id": ["a.png"], "pred": torch.zeros(1, 2)}], max_epochs=1)
    assert not (tmp_path / "p.csv").exists()
