"""A run whose weights stop being finite ends with an error, and nothing of it is saved as a model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ignite.engine import Engine, Events

from cxrdoll.engines.auroc import MaskedAUROC
from cxrdoll.engines.bundle_run import make_workflow
from cxrdoll.engines.divergence import StopOnDivergence, TrainingDiverged, weights_are_finite
from cxrdoll.engines.recorder import ValidationRecorder
from cxrdoll.errors import user_error
from tests.bundles.tiny_runs import TRAINING_BUNDLES, tiny_run_settings



def _network() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2))


def test_weights_are_finite_sees_a_nan_weight_and_an_infinite_running_statistic():
    net = _network()
    net(torch.zeros(2, 1, 5, 5))
    assert weights_are_finite(net)
    with torch.no_grad():
        net[0].weight[1, 0, 2, 2] = math.nan
    assert not weights_are_finite(net)
    net[0].weight.data.zero_()
    net[1].running_var[3] = math.inf
    assert not weights_are_finite(net)
    net[1].running_var.fill_(1.0)
    net[1].num_batches_tracked.fill_(2**62)  # an integer buffer: a count, not a weight
    assert weights_are_finite(net)


def test_huge_but_finite_weights_and_a_network_without_weights_count_as_finite():
    """Weights of 1e30 overflow a float32 2-norm to inf; their largest magnitude is still finite."""
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.fill_(1e30)
    assert weights_are_finite(net)
    assert weights_are_finite(torch.nn.ReLU())


def _engine(break_at: int | None, every: int, epoch_length: int = 4) -> tuple[Engine, list[int]]:
    """An engine whose network's weights turn NaN at iteration ``break_at``; also returns the
    iterations a later epoch-end handler (standing in for validation and checkpoint) saw."""
    net = torch.nn.Linear(3, 2)

    def step(engine: Engine, batch) -> None:
        if engine.state.iteration == break_at:
            with torch.no_grad():
                net.bias[0] = math.nan

    engine = Engine(step)
    engine.network, engine.optimizer = net, torch.optim.SGD(net.parameters(), lr=0.1)
    StopOnDivergence(every=every).attach(engine)
    saved: list[int] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.state.iteration))
    engine.state.epoch_length = epoch_length
    return engine, saved


def test_the_guard_stops_at_the_first_check_after_the_weights_break():
    engine, saved = _engine(break_at=5, every=3, epoch_length=10)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, iteration 6 \(learning rate now 0.1\)"):
        engine.run(range(10), max_epochs=2)
    assert saved == []


def test_an_epoch_that_broke_between_checks_is_caught_before_it_is_validated_or_saved():
    engine, saved = _engine(break_at=6, every=100)
    with pytest.raises(TrainingDiverged, match="epoch 2, iteration 8"):
        engine.run(range(4), max_epochs=3)
    assert saved == [4]  # epoch 1 was saved; epoch 2 was not


def test_finite_weights_train_to_the_end_and_the_interval_must_be_positive():
    engine, saved = _engine(break_at=None, every=1)
    engine.run(range(4), max_epochs=2)
    assert saved == [4, 8]
    with pytest.raises(ValueError, match="log_every must be a positive number of iterations, got 0"):
        StopOnDivergence(every=0)


def test_divergence_is_reported_as_the_users_setting_not_a_bug():
    err = RuntimeError("engine failed")
    err.__cause__ = TrainingDiverged("training diverged: ...")
    assert isinstance(user_error(err), TrainingDiverged)


@pytest.mark.parametrize("bundle", TRAINING_BUNDLES)
def test_a_diverging_bundle_run_stops_without_saving_a_model(bundle, tmp_path):
    out = tmp_path / "out"
    workflow = make_workflow(output_dir=str(out), max_epochs=2, learning_rate=1e9, log_every=2,
                             **tiny_run_settings(bundle, tmp_path, batch_size=4))
    trainer = workflow.parser.get_parsed_content("train#trainer")
    with pytest.raises(TrainingDiverged, match="Start over with a lower learning_rate"):
        trainer.run()
    assert trainer.state.epoch == 1
    written = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not written & {"model.pt", "checkpoint.pt", "metrics.json", "validation_history.json"}, written


def test_nan_scores_are_undefined_in_metrics_json_and_never_the_best_model(tmp_path):
    metric = MaskedAUROC()
    net = torch.nn.Linear(2, 2)
    recorder = ValidationRecorder(metric, tmp_path / "metrics.json", net, tmp_path / "model.pt")
    engine = Engine(lambda e, b: None)
    labels = torch.tensor([[0.0] * 14, [1.0] * 14])
    for epoch, scores in ((1, torch.tensor([[0.1] * 14, [0.9] * 14])), (2, torch.full((2, 14), math.nan))):
        metric.reset()
        metric.update((scores, labels))
        metric.compute()
        engine.state.epoch = epoch
        if epoch == 2:
            saved = (tmp_path / "model.pt").read_bytes()
            with torch.no_grad():
                net.weight.fill_(math.nan)
        recorder(engine)
    doc = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert doc["best"]["epoch"] == 1 and doc["last"]["mean_auroc"] is None
    assert doc["last"]["auroc"]["Cardiomegaly"] is None
    assert (tmp_path / "model.pt").read_bytes() == saved


def test_a_budget_stop_between_two_checks_does_not_validate_diverged_weights():
    from cxrdoll.engines.budget import WallClockBudget

    engine, saved = _engine(break_at=5, every=20, epoch_length=10)
    validated = []

    class Evaluator:
        def run(self, global_epoch):
            validated.append(global_epoch)

    WallClockBudget(6, Evaluator(), clock=lambda: engine.state.iteration).attach(engine)  # "seconds" = iterations
    with pytest.raises(TrainingDiverged, match="at epoch 1, iteration 6"):
        engine.run(range(10), max_epochs=2)
    assert validated == [] and saved == []

