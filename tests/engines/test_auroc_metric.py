import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.metrics import compute_roc_auc

from cxrdoll.constants import COMPETITION_OBSERVATIONS, OBSERVATIONS
from cxrdoll.engines.auroc import MaskedAUROC, binary_auroc, masked_auroc
from cxrdoll.engines.recorder import ValidationRecorder, with_record


def _random_case(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, len(OBSERVATIONS))).astype(np.float64)
    scores = labels * 0.7 + rng.normal(size=labels.shape)
    scores[:, 3] = np.round(scores[:, 3])  # ties
    labels[rng.random(labels.shape) < 0.3] = np.nan  # masked entries
    labels[:, OBSERVATIONS.index("Fracture")] = np.where(np.isnan(labels[:, 12]), np.nan, 0.0)  # one class only
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_observation_auroc_matches_monai_reference(seed):
    scores, labels = _random_case(seed)
    got = masked_auroc(scores, labels)
    for c, name in enumerate(OBSERVATIONS):
        known = ~np.isnan(labels[:, c])
        if name == "Fracture":
            assert got[name] is None
            continue
        ref = compute_roc_auc(torch.tensor(scores[known, c]), torch.tensor(labels[known, c]))
        assert got[name] == pytest.approx(float(ref), abs=1e-12), name


def test_binary_auroc_hand_values():
    assert binary_auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert binary_auroc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert binary_auroc(np.array([0.2, 0.3]), np.array([1, 1])) is None


def test_labels_other_than_zero_and_one_are_refused():
    """astype(bool) counted CheXpert's uncertain -1 as a positive: here AUROC 0.5 where the 0/1 entries
    alone give 1.0."""
    scores, labels = np.array([0.1, 0.9, 0.05, 0.4]), np.array([0, 1, -1, 0])
    with pytest.raises(ValueError, match=r"labels must be 0 or 1, found \[-1\]; give uncertain or unknown entries as NaN"):
        binary_auroc(scores, labels)
    with pytest.raises(ValueError, match=r"labels must be 0 or 1, found \[-1.0\]"):
        masked_auroc(scores[:, None].repeat(14, 1), labels[:, None].repeat(14, 1).astype(float))
    with pytest.raises(ValueError, match=r"scores \(3,\) and labels \(4,\) must have the same shape"):
        binary_auroc(scores[:3], labels)
    nan_masked = np.where(labels == -1, np.nan, labels).astype(float)
    assert masked_auroc(scores[:, None].repeat(14, 1), nan_masked[:, None].repeat(14, 1))["Edema"] == 1.0


def _engine_with_metric(batches, tmp_path):
    metric = MaskedAUROC()
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, "val_mean_auroc")
    recorder = ValidationRecorder(metric, tmp_path / "metrics.json")
    recorder.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine, metric


def test_metric_engine_mean_excludes_undefined_and_publishes_per_observation(tmp_path):
    scores, labels = _random_case(5)
    labels[:, OBSERVATIONS.index("Edema")] = np.nan  # a competition observation with no labels at all
    batches = [(torch.tensor(scores[i : i + 16]), torch.tensor(labels[i : i + 16])) for i in range(0, 60, 16)]
    engine, metric = _engine_with_metric(batches, tmp_path)
    per = masked_auroc(scores, labels)
    defined = [per[n] for n in COMPETITION_OBSERVATIONS if n != "Edema"]
    assert engine.state.metrics["val_mean_auroc"] == pytest.approx(np.mean(defined))
    assert engine.state.metrics["val_mean_auroc/Cardiomegaly"] == pytest.approx(per["Cardiomegaly"])
    assert "val_mean_auroc/Edema" not in engine.state.metrics
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["best"]["auroc"]["Edema"] is None and written["best"]["auroc"]["Fracture"] is None
    assert written["best"]["mean_auroc"] == pytest.approx(np.mean(defined))
    assert written["best"]["num_samples"] == 60


def test_metric_is_nan_when_no_competition_observation_is_defined(tmp_path):
    labels = np.zeros((4, len(OBSERVATIONS)))
    engine, metric = _engine_with_metric([(torch.rand(4, 14), torch.tensor(labels))], tmp_path)
    assert math.isnan(engine.state.metrics["val_mean_auroc"]) and metric.mean is None
    assert json.loads((tmp_path / "metrics.json").read_text())["best"]["mean_auroc"] is None


def test_a_metric_over_its_own_observations_reads_decollated_samples_and_scores_each_run_afresh():
    """MONAI's decollated output is a list of per-sample tensors; each evaluator run counts its own samples."""
    metric = MaskedAUROC(observations=("A", "B"), mean_over=("B",))
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, "auc")
    rng = np.random.default_rng(7)
    for n in (12, 9):
        scores = rng.random((n, 2)).astype(np.float32)
        labels = np.array([[0, 1], [1, 0]] + [[i % 2, (i // 2) % 2] for i in range(n - 2)], dtype=np.float32)
        engine.run([([torch.from_numpy(s) for s in scores], [torch.from_numpy(y) for y in labels])], max_epochs=1)
        expected = compute_roc_auc(torch.from_numpy(scores[:, 1]), torch.from_numpy(labels[:, 1]))
        assert engine.state.metrics["auc"] == pytest.approx(float(expected), abs=1e-12)
        assert metric.num_samples == n
    with pytest.raises(ValueError, match=r"scores \(4, 3\) and labels \(4, 3\) must both be \(N, 2\)"):
        masked_auroc(np.zeros((4, 3)), np.zeros((4, 3)), ("A", "B"))  # a third column would go unscored


def test_unknown_mean_over_name_is_rejected():
    with pytest.raises(ValueError, match=r"mean_over names \['Cardio'\] are not among the observations"):
        MaskedAUROC(mean_over=["Cardio"])


def _scored_metric() -> SimpleNamespace:
    """What ValidationRecorder reads of a MaskedAUROC after a validation; set ``mean`` to score it."""
    return SimpleNamespace(observations=OBSERVATIONS, mean_over=COMPETITION_OBSERVATIONS, per_observation={},
                           num_samples=4, mean=None)


def test_only_a_strictly_better_mean_auroc_replaces_the_best_model(tmp_path):
    """Small validation sets tie (AUROC 1.0 from some epoch on): the model kept is the first to reach
    the best score, and a tie writes no model file."""
    scores = iter([0.7, 0.8, 0.8, None, 0.75])
    metric = _scored_metric()
    net = torch.nn.Linear(2, 1)
    recorder = ValidationRecorder(metric, tmp_path / "metrics.json", net, tmp_path / "model.pt")
    saved = []
    for epoch in range(1, 6):
        metric.mean = next(scores)
        with torch.no_grad():
            net.bias.fill_(epoch)
        recorder(SimpleNamespace(state=SimpleNamespace(epoch=epoch)))
        saved.append(float(torch.load(tmp_path / "model.pt", weights_only=True)["bias"]))
    assert saved == [1.0, 2.0, 2.0, 2.0, 2.0]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert (written["best"]["epoch"], written["last"]["epoch"]) == (2, 5)


def test_a_new_record_replaces_those_of_its_epoch_and_every_later_one():
    """A resumed run re-runs the epochs after its checkpoint: records a killed attempt left for them
    describe weights since discarded."""
    history = [{"epoch": 1, "v": "a"}, {"epoch": 2, "v": "a"}, {"epoch": 3, "v": "a"}, {"epoch": 4, "v": "a"}]
    assert with_record(history, {"epoch": 2, "v": "b"}) == [{"epoch": 1, "v": "a"}, {"epoch": 2, "v": "b"}]
    assert with_record(history, {"epoch": 5, "v": "b"}) == history + [{"epoch": 5, "v": "b"}]


def test_recorder_refuses_to_resume_a_run_trained_with_other_settings(tmp_path):
    written = ValidationRecorder(MaskedAUROC(), tmp_path / "m.json", run={"network_name": "resnet18", "image_size": 64})
    written.history, written.best = [{"epoch": 1}], {"epoch": 1, "mean_auroc": 0.8}
    state = written.state_dict()
    same = ValidationRecorder(MaskedAUROC(), tmp_path / "m.json", run={"network_name": "resnet18", "image_size": 64})
    same.load_state_dict(state)
    assert same.best == written.best and same.state_dict()["run"] == {"network_name": "resnet18", "image_size": 64}
    smaller = ValidationRecorder(MaskedAUROC(), tmp_path / "m.json", run={"network_name": "resnet18", "image_size": 32})
    with pytest.raises(ValueError, match=r"^the resume checkpoint was trained with image_size=64, not 32$"):
        smaller.load_state_dict(state)
    ValidationRecorder(MaskedAUROC(), tmp_path / "m.json").load_state_dict({"history": [], "best": None})  # older checkpoints


def test_a_resume_reads_back_only_its_own_runs_later_validations(tmp_path):
    """metrics.json left by an earlier run with the same settings (a --resume false run into the same folder)
    is not this run's history, even though an empty checkpoint history is a prefix of it."""
    from cxrdoll.io import write_json_atomic

    run = {"network_name": "resnet18", "image_size": 64}
    earlier = ValidationRecorder(MaskedAUROC(), tmp_path / "m.json", run=run)
    earlier.history, earlier.best = [{"epoch": 2, "mean_auroc": 0.9}], {"epoch": 2, "mean_auroc": 0.9}
    write_json_atomic(tmp_path / "m.json", earlier.summary())

    fresh = ValidationRecorder(MaskedAUROC(), tmp_path / "m.json", run=run)
    fresh.load_state_dict(ValidationRecorder(MaskedAUROC(), tmp_path / "m.json", run=run).state_dict())  # epoch 1, no validation yet
    assert fresh.history == [] and fresh.best is None
    same = ValidationRecorder(MaskedAUROC(), tmp_path / "m.json", run=run)
    same.load_state_dict({**earlier.state_dict(), "history": [], "best": None})  # the run that wrote the file
    assert same.history == earlier.history and same.best == earlier.best and same.run_id == earlier.run_id


def test_an_epoch_validated_before_a_kill_and_run_again_is_recorded_once(tmp_path):
    """Killed between epoch 2's validation and its checkpoint: the resumed run re-runs epoch 2, whose new
    record replaces the one read back from metrics.json; model.pt stays the best model's."""
    import copy

    net = torch.nn.Linear(2, 1)
    metric = MaskedAUROC()

    def validate(recorder: ValidationRecorder, epoch: int, score: float) -> None:
        with torch.no_grad():
            net.weight.fill_(score)  # the weights model.pt would hold after this validation
        metric.mean = score
        recorder(SimpleNamespace(state=SimpleNamespace(epoch=epoch)))

    files = {"metrics_file": tmp_path / "metrics.json", "network": net, "model_file": tmp_path / "model.pt"}
    killed = ValidationRecorder(metric, **files)
    validate(killed, 1, 0.536)
    checkpoint = copy.deepcopy(killed.state_dict())  # saved after epoch 1
    validate(killed, 2, 0.6)  # better: model.pt saved, then the kill before the checkpoint

    resumed = ValidationRecorder(metric, **files)
    resumed.load_state_dict(checkpoint)
    validate(resumed, 2, 0.418)
    validate(resumed, 3, 0.55)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert [(h["epoch"], h["mean_auroc"]) for h in written["history"]] == [(1, 0.536), (2, 0.418), (3, 0.55)]
    assert (written["best"]["epoch"], written["best"]["mean_auroc"]) == (2, 0.6)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].flatten().tolist() == [pytest.approx(0.6)] * 2


class _Labels(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 60

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.full((14,), float(index % 2))


def test_validation_batches_from_loader_workers_leave_no_descriptor_open():
    """A worker's CPU batch lives in shared memory, one open descriptor while referenced: the metric
    kept every batch's labels, and a CheXpert-sized validation at batch 16 hit "Too many open files"."""
    import os

    metric = MaskedAUROC()
    metric.reset()
    loader = torch.utils.data.DataLoader(_Labels(), batch_size=1, num_workers=1)
    batches = iter(loader)
    metric.update((torch.zeros(1, 14), next(batches)))  # the worker is running: count from here
    before = len(os.listdir("/proc/self/fd"))
    for labels in batches:
        metric.update((torch.zeros(1, 14), labels))
    assert len(os.listdir("/proc/self/fd")) - before < 10  # 59 batches: 59 more before the copy
    assert len(metric._labels) == 60


def test_a_defined_score_after_an_undefined_first_one_saves_the_model(tmp_path):
    """An epoch with no defined AUROC is best only until a defined one comes; comparing with it would fail."""
    metric = _scored_metric()
    net = torch.nn.DataParallel(torch.nn.Linear(2, 1))  # as under DDP: model.pt holds the plain module's keys
    recorder = ValidationRecorder(metric, tmp_path / "metrics.json", net, tmp_path / "model.pt")
    recorder(SimpleNamespace(state=SimpleNamespace(epoch=1)))
    assert not (tmp_path / "model.pt").exists()
    metric.mean = 0.6
    recorder(SimpleNamespace(state=SimpleNamespace(epoch=2)))
    assert recorder.best["epoch"] == 2
    assert sorted(torch.load(tmp_path / "model.pt", weights_only=True)) == ["bias", "weight"]
    with pytest.raises(ValueError, match="network and model_file go together"):
        ValidationRecorder(metric, tmp_path / "metrics.json", net)


def test_settings_only_one_side_records_or_tuples_read_back_as_lists_do_not_block_a_resume():
    """A checkpoint from before a setting was recorded, and a tuple setting against its JSON list, resume."""
    from cxrdoll.engines.recorder import refuse_other_settings

    refuse_other_settings({"image_size": 64, "retired": 1}, {"image_size": 64, "class_names": ("lung",)})
    refuse_other_settings({"class_names": ["lung", "heart"]}, {"class_names": ("lung", "heart")})


def test_a_record_file_that_is_unreadable_or_not_continuing_the_checkpoint_is_not_read_back(tmp_path):
    """Only the same run's file whose history extends the checkpoint's can hold later validations."""
    from cxrdoll.engines.recorder import later_validations

    path = tmp_path / "m.json"
    path.write_text("{broken")
    assert later_validations(path, [], "r1") is None
    known = [{"epoch": 1, "mean_auroc": 0.5}]
    path.write_text(json.dumps({"run_id": "r1", "history": [{"epoch": 1, "mean_auroc": 0.7}, {"epoch": 2}]}))
    assert later_validations(path, known, "r1") is None
    path.write_text(json.dumps({"run_id": "r1", "history": known + [{"epoch": 2}]}))
    assert later_validations(path, known, "r1")["history"] == known + [{"epoch": 2}]


def test_an_attached_recorder_gives_a_resumed_evaluator_its_recorded_best(tmp_path):
    """MONAI's evaluator starts with best_metric_epoch -1; the recorder restores it when the run starts."""
    metric = _scored_metric()
    recorder = ValidationRecorder(metric, tmp_path / "metrics.json")
    recorder.best = {"epoch": 3, "mean_auroc": 0.8}
    engine = Engine(lambda e, batch: None)
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "best_metric_epoch", -1))
    recorder.attach(engine)
    engine.run([0], max_epochs=1)  # an undefined score: the restored best stands
    assert (engine.state.best_metric, engine.state.best_metric_epoch) == (0.8, 3)


def test_no_checkpoint_given_as_an_empty_string_takes_the_default():
    """Bundle configs pass '' when training from scratch."""
    from cxrdoll.engines.recorder import trained_setting

    assert trained_setting("", "image_size", 320) == 320
