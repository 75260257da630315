"""``python -m cxrdoll sweep-classifiers``: bad input is a one-line error and never overwrites the registry."""

from __future__ import annotations

import json
import types

import pytest

from cxrdoll.cli import main
from tests.bundles.classifier_data import write_tiny_datalist


def test_corrupt_image_is_one_line_naming_it(tmp_path, capsys):
    """The error comes from a DataLoader worker building the image cache, inside MONAI's config wrappers."""
    datalist = write_tiny_datalist(tmp_path / "data", n_train=4, n_val=2, size=32)
    corrupt = tmp_path / "data" / "images" / "training_001.png"
    corrupt.write_bytes(b"not a png")
    argv = ["sweep-classifiers", "--datalist", str(datalist), "--out", str(tmp_path / "zoo"), "--archs", "resnet10",
            "--image-size", "32", "--max-epochs", "1", "--batch-size", "2", "--num-workers", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"error: {corrupt}: cannot identify image file")


def test_register_only_refuses_a_broken_datalist_and_keeps_the_registry(tmp_path, capsys):
    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    run = tmp_path / "zoo" / "resnet10"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"weights")
    (run / "metrics.json").write_text(json.dumps({"best": {"auroc": {}, "mean_auroc": 0.8, "epoch": 1}}))
    argv = ["sweep-classifiers", "--register-only", "--out", str(tmp_path / "zoo"), "--archs", "resnet10"]
    assert main([*argv, "--datalist", str(datalist)]) == 0
    registry = (tmp_path / "zoo" / "classifiers.json").read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(datalist.read_text()[:200])
    capsys.readouterr()
    assert main([*argv, "--datalist", str(truncated)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {truncated}: not valid JSON")
    assert (tmp_path / "zoo" / "classifiers.json").read_text() == registry


@pytest.mark.parametrize("best", [{"auroc": {}, "mean_auroc": None, "epoch": 1}, None])
def test_register_only_explains_a_run_without_any_validation_auroc(tmp_path, capsys, best):
    """A validation split without both classes on the competition five gives no mean AUROC and no model to rank
    (a metrics.json with no best record at all says the same, not a TypeError)."""
    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    run = tmp_path / "zoo" / "resnet10"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"best": best}))
    argv = ["sweep-classifiers", "--register-only", "--datalist", str(datalist), "--out", str(tmp_path / "zoo"),
            "--archs", "resnet10"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: {run / 'metrics.json'}: no validation AUROC was defined for resnet10 (none of the competition five "
        "had both positive and negative validation labels: the validation split needs both)\n")
    assert not (tmp_path / "zoo" / "classifiers.json").exists()


def test_a_repeated_architecture_is_refused_before_anything_is_written(tmp_path, capsys):
    """Twice the same run registered twice: a classifiers.json the labeller refuses (names not unique)."""
    argv = ["sweep-classifiers", "--register-only", "--datalist", "x.json", "--out", str(tmp_path / "zoo"),
            "--archs", "resnet10", "densenet_tiny", "resnet10"]
    assert main(argv) == 2
    assert capsys.readouterr().err == "error: --archs: ['resnet10'] listed more than once; each architecture trains one run\n"
    assert not (tmp_path / "zoo").exists()


def test_register_only_refuses_a_run_trained_on_another_datalist(tmp_path, capsys):
    """Its AUROCs would be registered beside this datalist's hash, and the labeller would trust them."""
    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    run = tmp_path / "zoo" / "resnet10"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"weights")
    best = {"auroc": {}, "mean_auroc": 0.8, "epoch": 1}
    (run / "metrics.json").write_text(json.dumps({"best": best, "run": {"datalist_sha256": "ab" * 32}}))
    argv = ["sweep-classifiers", "--register-only", "--datalist", str(datalist), "--out", str(tmp_path / "zoo"),
            "--archs", "resnet10"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {run / 'metrics.json'}: trained on another datalist (sha256 abababababab..., not ")
    assert not (tmp_path / "zoo" / "classifiers.json").exists()


def _fake_run(zoo, arch, weights=b"weights", mean_auroc=0.8):
    run = zoo / arch
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.pt").write_bytes(weights)
    (run / "checkpoint.pt").write_bytes(b"state after training " + weights)
    (run / "metrics.json").write_text(json.dumps({"best": {"auroc": {}, "mean_auroc": mean_auroc, "epoch": 1}}))
    return run


def test_a_failed_re_run_or_another_sweep_keeps_the_classifiers_registered_before(tmp_path, capsys):
    """The registry was rebuilt from nothing: a damaged run dropped every finished one after it."""
    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    zoo = tmp_path / "zoo"
    for arch in ("resnet10", "densenet_tiny"):
        _fake_run(zoo, arch)
    argv = ["sweep-classifiers", "--register-only", "--datalist", str(datalist), "--out", str(zoo), "--archs"]
    assert main([*argv, "resnet10", "densenet_tiny"]) == 0
    names = lambda: [e["name"] for e in json.loads((zoo / "classifiers.json").read_text())["classifiers"]]  # noqa: E731
    assert names() == ["resnet10", "densenet_tiny"]
    (zoo / "densenet_tiny" / "metrics.json").write_text("{")
    assert main([*argv, "resnet10", "densenet_tiny"]) == 2
    assert names() == ["resnet10", "densenet_tiny"]
    _fake_run(zoo, "resnet18")
    assert main([*argv, "resnet18"]) == 0
    assert names() == ["resnet10", "densenet_tiny", "resnet18"]
    (zoo / "densenet_tiny" / "model.pt").unlink()  # a run removed by hand is not registered any more
    assert main([*argv, "resnet18"]) == 0
    assert names() == ["resnet10", "resnet18"]
    (zoo / "resnet10" / "model.pt").write_bytes(b"retrained by hand")  # its entry no longer describes it
    registry = json.loads((zoo / "classifiers.json").read_text())
    registry["classifiers"].append({**registry["classifiers"][1], "name": "mine"})
    del registry["classifiers"][-1]["checkpoint_sha256"]  # added by hand, as the labeller accepts
    (zoo / "classifiers.json").write_text(json.dumps(registry))
    assert main([*argv, "resnet18"]) == 0
    assert names() == ["resnet18", "mine"]
    other = write_tiny_datalist(tmp_path / "other", n_train=3, n_val=2, size=16)
    assert main([*argv[:3], str(other), *argv[4:], "resnet18"]) == 0  # another datalist: nothing carried over
    assert names() == ["resnet18"]


def test_a_re_run_that_trains_nothing_keeps_the_training_time(tmp_path, monkeypatch):
    from cxrdoll.engines import sweep as sweep_module

    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    zoo = tmp_path / "zoo"
    weights = {"resnet10": b"first"}

    def train(out, **_):
        run = _fake_run(zoo, out.name, weights[out.name])
        return json.loads((run / "metrics.json").read_text())

    monkeypatch.setattr(sweep_module, "train_classifier", train)
    clock = iter([0.0, 23.8, 100.0, 200.0, 240.0])  # read at each start, and at the end of a run that trained
    monkeypatch.setattr(sweep_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    overrides = {"image_size": 32}
    assert sweep_module.sweep(["resnet10"], datalist, zoo, "b", overrides)["classifiers"][0]["train_seconds"] == 23.8
    assert sweep_module.sweep(["resnet10"], datalist, zoo, "b", overrides)["classifiers"][0]["train_seconds"] == 23.8
    weights["resnet10"] = b"trained further"
    assert sweep_module.sweep(["resnet10"], datalist, zoo, "b", overrides)["classifiers"][0]["train_seconds"] == 40.0


def test_a_run_trained_by_hand_gets_no_training_time_from_a_sweep_that_trained_nothing(tmp_path, monkeypatch):
    """The sweep's resume of a finished run takes a second: that was recorded as its training time."""
    from cxrdoll.engines import sweep as sweep_module

    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    zoo = tmp_path / "zoo"
    _fake_run(zoo, "resnet10")  # trained by monai.bundle run, never registered

    def train(out, **_):  # nothing left to train: the run's files stay as they were
        return json.loads((out / "metrics.json").read_text())

    monkeypatch.setattr(sweep_module, "train_classifier", train)
    entry = sweep_module.sweep(["resnet10"], datalist, zoo, "b", {"image_size": 32})["classifiers"][0]
    assert entry["name"] == "resnet10" and "train_seconds" not in entry


def test_a_set_of_what_the_sweep_sets_itself_is_refused_before_anything_is_written(tmp_path, capsys):
    """``--set datalist=`` trained on one datalist and registered the hash of another; ``--set output_dir=``
    ended in a TypeError traceback."""
    argv = ["sweep-classifiers", "--datalist", "x.json", "--out", str(tmp_path / "zoo"), "--archs", "resnet10",
            "--set", "datalist=other.json", "--set", "learning_rate=0.01", "--set", "output_dir=/tmp/elsewhere"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "error: --set: datalist (use --datalist), output_dir (use --out): the sweep sets these from its own options\n")
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--image-size", "0", "argument --image-size: image size 0 px is below 32 px"),
    ("--image-size", "big", "argument --image-size: image size 'big' is not a whole number of pixels"),
    ("--max-epochs", "0", "argument --max-epochs: '0' is not a positive whole number"),
    ("--batch-size", "0", "argument --batch-size: '0' is not a positive whole number"),
    ("--num-workers", "-1", "argument --num-workers: '-1' is not a whole number >= 0"),
])
def test_bad_training_values_are_usage_errors_naming_the_option(tmp_path, capsys, option, value, message):
    """Refused while parsing: they used to reach the bundle, which failed only after starting (and caching
    the images), naming its own id (max_epochs, batch_size, num_workers) rather than the option."""
    out = tmp_path / "zoo"
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep-classifiers", "--datalist", str(tmp_path / "d.json"), "--out", str(out), option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_repeated_archs_options_add_up_and_the_default_applies_without_any(tmp_path, capsys, monkeypatch):
    """'--archs resnet10 --archs densenet_tiny' kept only the last list, silently training one architecture."""
    import cxrdoll.engines.sweep as sweep_module

    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    trained = []
    monkeypatch.setattr(sweep_module, "sweep", lambda archs, *args, **kwargs: trained.append(list(archs)))
    argv = ["sweep-classifiers", "--datalist", str(datalist), "--out", str(tmp_path / "zoo")]
    assert main([*argv, "--archs", "resnet10", "--archs", "densenet_tiny"]) == 0
    assert main(argv) == 0
    assert trained == [["resnet10", "densenet_tiny"], ["densenet121", "resnet18"]]


def test_every_id_the_sweep_sets_itself_is_refused_as_a_set(tmp_path, capsys):
    """Each would train other than what is registered: another size or epoch count, another network in the run
    folder, an evaluation instead of training (configs), or two values for one argument (a TypeError)."""
    taken = {"datalist": "--datalist", "dataset_dir": "--dataset-dir", "image_size": "--image-size",
             "max_epochs": "--max-epochs", "batch_size": "--batch-size", "num_workers": "--num-workers",
             "output_dir": "--out", "network_name": "--archs", "bundle_root": "--bundle-root"}
    sets = [arg for key in [*taken, "configs"] for arg in ("--set", f"{key}=1")]
    argv = ["sweep-classifiers", "--datalist", "x.json", "--out", str(tmp_path / "zoo"), "--archs", "resnet10", *sets]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for key, option in taken.items():
        assert f"{key} (use {option})" in err
    assert "configs (the sweep trains with train.json)" in err
    assert not (tmp_path / "zoo").exists()


def test_each_finished_architecture_is_registered_before_the_next_trains(tmp_path, monkeypatch):
    """The labeller can use what has finished: a later architecture that fails must not lose the earlier one."""
    from cxrdoll.engines import sweep as sweep_module

    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    zoo = tmp_path / "zoo"

    def train(out, **_):
        if out.name == "densenet_tiny":
            raise RuntimeError("out of memory")
        return json.loads((_fake_run(zoo, out.name) / "metrics.json").read_text())

    monkeypatch.setattr(sweep_module, "train_classifier", train)
    with pytest.raises(RuntimeError, match="out of memory"):
        sweep_module.sweep(["resnet10", "densenet_tiny"], datalist, zoo, "b", {"image_size": 32})
    registry = json.loads((zoo / "classifiers.json").read_text())
    assert [e["name"] for e in registry["classifiers"]] == ["resnet10"]


def test_register_only_refuses_a_run_of_another_architecture(tmp_path, capsys):
    """A resnet18 run copied into resnet10/ would be registered, and loaded by the labeller, as a resnet10."""
    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    run = _fake_run(tmp_path / "zoo", "resnet10")
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "run": {"network_name": "resnet18"}}))
    argv = ["sweep-classifiers", "--register-only", "--datalist", str(datalist), "--out", str(tmp_path / "zoo"),
            "--archs", "resnet10"]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {run / 'metrics.json'}: trained as 'resnet18', not 'resnet10'\n"
    assert not (tmp_path / "zoo" / "classifiers.json").exists()


def test_the_entry_records_the_runs_best_validation(tmp_path):
    """The best epoch and its AUROCs, not the last or a default (the labeller ranks classifiers by them)."""
    from cxrdoll.engines.sweep import sweep

    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    run = _fake_run(tmp_path / "zoo", "resnet10")
    best = {"auroc": {"Cardiomegaly": 0.75, "Edema": None}, "mean_auroc": 0.75, "epoch": 3}
    last = {"auroc": {"Cardiomegaly": 0.5, "Edema": None}, "mean_auroc": 0.5, "epoch": 4}
    (run / "metrics.json").write_text(json.dumps({"best": best, "last": last, "history": [best, last]}))
    (entry,) = sweep(["resnet10"], datalist, tmp_path / "zoo", "b", {"image_size": 32}, train=False)["classifiers"]
    assert (entry["best_epoch"], entry["mean_auroc"], entry["auroc"]) == (3, 0.75, best["auroc"])
    assert entry["image_size"] == 32  # recorded by no run: the command line's


def test_a_registry_that_is_not_an_object_is_replaced(tmp_path):
    """A classifiers.json holding a JSON list (written by hand) describes nothing to keep: no AttributeError."""
    from cxrdoll.engines.sweep import sweep

    datalist = write_tiny_datalist(tmp_path / "data", n_train=2, n_val=2, size=16)
    _fake_run(tmp_path / "zoo", "resnet10")
    (tmp_path / "zoo" / "classifiers.json").write_text("[]")
    sweep(["resnet10"], datalist, tmp_path / "zoo", "b", {"image_size": 32}, train=False)
    registry = json.loads((tmp_path / "zoo" / "classifiers.json").read_text())
    assert [e["name"] for e in registry["classifiers"]] == ["resnet10"]
