"""The cxr_classifier bundle end to end on a tiny datalist: train, resume, evaluate, infer, export."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from cxrdoll.engines.bundle_run import run_bundle
from cxrdoll.errors import user_error
from cxrdoll.io import file_sha256
from cxrdoll.networks import build_classifier
from tests.bundles.classifier_data import write_tiny_datalist

ARCH = "densenet_tiny"
COMMON = {"network_name": ARCH, "image_size": 64, "batch_size": 8, "num_workers": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls_bundle")
    datalist = write_tiny_datalist(root / "data")
    out = root / "out"
    workflow = run_bundle(datalist=str(datalist), output_dir=str(out), max_epochs=1, **COMMON)
    return {"datalist": datalist, "out": out, "trainer": workflow.parser.get_parsed_content("train#trainer")}


def test_training_writes_model_checkpoint_metrics_and_logs(trained):
    out = trained["out"]
    assert trained["trainer"].state.iteration == 2  # 16 images, batch 8, one epoch
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    net = build_classifier(ARCH)
    net.load_state_dict(state)  # strict: same keys as the registry's classifier
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert set(ckpt) == {"network", "optimizer", "lr_scheduler", "recorder", "trainer"}
    assert ckpt["trainer"]["iteration"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["epoch"] == 1 and metrics["best"]["num_samples"] == 8
    assert 0.0 <= metrics["best"]["auroc"]["Cardiomegaly"] <= 1.0
    # Edema is masked everywhere and Fracture one-class: both undefined, excluded from the mean.
    assert metrics["best"]["auroc"]["Edema"] is None and metrics["best"]["auroc"]["Fracture"] is None
    assert metrics["best"]["mean_auroc"] == pytest.approx(metrics["best"]["auroc"]["Cardiomegaly"])
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert list((out / "cache").glob("images_64px_16_*.npy")) and list((out / "cache").glob("images_64px_8_*.npy"))


def test_resume_continues_from_last_epoch(trained, tmp_path):
    out = tmp_path / "resumed"
    out.mkdir()
    for name in ("checkpoint.pt", "metrics.json", "model.pt"):
        (out / name).write_bytes((trained["out"] / name).read_bytes())
    workflow = run_bundle(datalist=str(trained["datalist"]), output_dir=str(out), max_epochs=2, **COMMON)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 4  # one more epoch, not two
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    # MONAI's evaluator (and its log) knows the best epoch from before the resume too
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    assert (evaluator.state.best_metric_epoch, evaluator.state.best_metric) == (
        metrics["best"]["epoch"], pytest.approx(metrics["best"]["mean_auroc"]))
    other = write_tiny_datalist(tmp_path / "other")  # same layout, other images: AUROCs of neither
    with pytest.raises(RuntimeError) as refused:  # MONAI wraps the error of a config expression
        run_bundle(datalist=str(other), output_dir=str(out), max_epochs=3, **COMMON)
    assert re.match(rf"{re.escape(str(out / 'checkpoint.pt'))}: the resume checkpoint was trained with "
                    r"datalist_sha256='[0-9a-f]{64}', not", str(user_error(refused.value)))


def test_a_run_finding_its_image_cache_built_trains_as_the_run_that_built_it(trained, tmp_path):
    """Same seed, same settings: building the cache drew from torch's global generator (validation AUROC 0.7286
    against 0.7143 reported on a real set)."""
    out = tmp_path / "found"
    run_bundle(datalist=str(trained["datalist"]), output_dir=str(out), cache_dir=str(trained["out"] / "cache"),
               max_epochs=1, **COMMON)
    assert not (out / "cache").exists()
    built, found = (torch.load(o / "model.pt", map_location="cpu", weights_only=True) for o in (trained["out"], out))
    assert all(torch.equal(built[k], found[k]) for k in built)
    assert (json.loads((out / "metrics.json").read_text())["best"]["auroc"]
            == json.loads((trained["out"] / "metrics.json").read_text())["best"]["auroc"])


def test_a_resume_with_other_optimisation_settings_is_refused(trained, tmp_path):
    """The optimizer state in the checkpoint keeps its learning rate and weight decay: new ones would be ignored."""
    out = tmp_path / "resumed"
    out.mkdir()
    for name in ("checkpoint.pt", "metrics.json", "model.pt"):
        (out / name).write_bytes((trained["out"] / name).read_bytes())
    changed = {"learning_rate": 0.5, "weight_decay": 0.3, "batch_size": 4, "seed": 7}
    with pytest.raises(RuntimeError) as refused:
        run_bundle(datalist=str(trained["datalist"]), output_dir=str(out), max_epochs=2, **{**COMMON, **changed})
    assert str(user_error(refused.value)).startswith(
        f"{out / 'checkpoint.pt'}: the resume checkpoint was trained with batch_size=8, not 4, "
        "learning_rate=0.0001, not 0.5, seed=0, not 7, weight_decay=1e-05, not 0.3: ")
    assert json.loads((out / "metrics.json").read_text())["run"]["learning_rate"] == 0.0001
    with pytest.raises(RuntimeError) as refused:  # named, not as the 75 missing and 125 unexpected keys it makes
        run_bundle(datalist=str(trained["datalist"]), output_dir=str(out), max_epochs=2,
                   **{**COMMON, "network_name": "resnet10"})
    assert str(user_error(refused.value)).startswith(
        f"{out / 'checkpoint.pt'}: the resume checkpoint was trained with network_name='densenet_tiny', not "
        "'resnet10': resume with its settings, or start over in a new or empty output_dir")


def test_a_run_that_does_not_resume_is_refused_where_another_run_left_its_model(trained, tmp_path):
    out = tmp_path / "finished"
    shutil.copytree(trained["out"], out)
    model = (out / "model.pt").read_bytes()
    for resume, how in ((False, "resume it with --resume true"), (True, "it left no checkpoint.pt to resume from")):
        if resume:
            (out / "checkpoint.pt").unlink()  # killed between its validation and its checkpoint
        with pytest.raises(RuntimeError) as refused:
            run_bundle(datalist=str(trained["datalist"]), output_dir=str(out), max_epochs=1, resume=resume, **COMMON)
        assert str(user_error(refused.value)) == (
            f"{out}: holds another run's metrics.json and model.pt, which this run would overwrite: {how}, or use a "
            "new or empty output_dir")
        assert (out / "model.pt").read_bytes() == model


def test_evaluate_reproduces_validation_auroc_of_best_model(trained):
    run_bundle(configs=("train.json", "evaluate.json"), datalist=str(trained["datalist"]),
               output_dir=str(trained["out"]), **COMMON)
    evaluated = json.loads((trained["out"] / "eval" / "metrics.json").read_text())["last"]
    recorded = json.loads((trained["out"] / "metrics.json").read_text())["best"]
    assert evaluated["auroc"] == pytest.approx(recorded["auroc"])
    assert evaluated["num_samples"] == 8


def test_inference_writes_probabilities_matching_the_model(trained):
    images = trained["datalist"].parent / "images"
    out = trained["out"]
    run_bundle(configs=("inference.json",), dataset_dir=str(images), output_dir=str(out), **COMMON)
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24 and rows[0]["id"] == "training_000.png"
    from cxrdoll.data.transforms import load_image_pipeline

    net = build_classifier(ARCH)
    net.load_state_dict(torch.load(out / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    image = load_image_pipeline(64)({"image": str(images / "validation_003.png")})["image"]
    with torch.no_grad():
        expected = torch.sigmoid(net(image[None]))[0]
    row = next(r for r in rows if r["id"] == "validation_003.png")
    assert float(row["Cardiomegaly"]) == pytest.approx(float(expected[2]), abs=2e-6)


def test_inference_and_evaluation_default_to_the_network_and_size_the_run_recorded(trained, tmp_path):
    """metrics.json beside model.pt says densenet_tiny at 64 px: no --network_name/--image_size needed."""
    images = trained["datalist"].parent / "images"
    for name, settings in (("given", COMMON), ("recorded", {"num_workers": 0})):
        run_bundle(configs=("inference.json",), dataset_dir=str(images), ckpt_path=str(trained["out"] / "model.pt"),
                   predictions_file=str(tmp_path / f"{name}.csv"), **settings)
    with open(tmp_path / "recorded.csv") as fh, open(tmp_path / "given.csv") as given:
        assert list(csv.DictReader(fh)) == list(csv.DictReader(given))
    workflow = run_bundle(configs=("train.json", "evaluate.json"), datalist=str(trained["datalist"]),
                          output_dir=str(trained["out"]), eval_dir=str(tmp_path / "eval"), num_workers=0,
                          batch_size=8)
    assert (workflow.parser.get_parsed_content("network_name"), workflow.parser.get_parsed_content("image_size")) == (
        ARCH, 64)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["last"]
    assert evaluated["auroc"] == pytest.approx(json.loads((trained["out"] / "metrics.json").read_text())["best"]["auroc"])


def test_inference_skips_and_lists_an_unreadable_image(trained, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(trained["datalist"].parent / "images", images)
    (images / "corrupt.png").write_bytes(b"\x89PNG not really")
    (images / "moved.png").symlink_to(tmp_path / "elsewhere.png")  # a broken link was left out unreported
    run_bundle(configs=("inference.json",), dataset_dir=str(images), output_dir=str(trained["out"]),
               predictions_file=str(tmp_path / "run" / "predictions.csv"), **COMMON)
    with open(tmp_path / "run" / "predictions.csv") as fh:
        ids = [row["id"] for row in csv.DictReader(fh)]
    assert len(ids) == 24 and "corrupt.png" not in ids
    with open(tmp_path / "run" / "skipped.csv") as fh:
        skipped = list(csv.DictReader(fh))
    assert [row["id"] for row in skipped] == ["corrupt.png", "moved.png"]
    assert str(images / "corrupt.png") in skipped[0]["reason"] and str(images / "moved.png") in skipped[1]["reason"]


def test_missing_datalist_names_the_folder(tmp_path):
    with pytest.raises(RuntimeError) as err:
        run_bundle(dataset_dir=str(tmp_path), output_dir=str(tmp_path / "o"), **COMMON)
    assert f"{tmp_path}: no classification datalist" in repr(err.value.__cause__)


@pytest.mark.parametrize(("size", "message"), [(0, "image size 0 px is below 32 px"),
                                             ("64px", "image size '64px' is not a whole number of pixels")])
def test_an_image_size_the_networks_cannot_take_is_refused_before_any_image_is_cached(tmp_path, size, message):
    datalist = write_tiny_datalist(tmp_path / "data", n_train=8, n_val=4)
    with pytest.raises(RuntimeError) as err:
        run_bundle(datalist=str(datalist), output_dir=str(tmp_path / "o"), **{**COMMON, "image_size": size})
    assert str(err.value.__cause__).startswith(message)
    assert not (tmp_path / "o" / "cache").exists()


def test_a_training_split_smaller_than_one_batch_is_refused_not_skipped(tmp_path, capsys):
    """The loader drops the incomplete last batch: 6 images at batch 8 would train nothing, silently."""
    from cxrdoll.cli import main

    datalist = write_tiny_datalist(tmp_path / "data", n_train=6, n_val=4)
    rc = main(["sweep-classifiers", "--datalist", str(datalist), "--out", str(tmp_path / "zoo"), "--archs", ARCH,
               "--image-size", "64", "--max-epochs", "1", "--batch-size", "8", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "metrics.json" not in err
    assert (f"{datalist}: the training split has 6 images, fewer than one batch of batch_size=8; the incomplete last "
            "batch is dropped, so nothing would train: set batch_size to at most 6") in err
    workflow = run_bundle(datalist=str(datalist), output_dir=str(tmp_path / "six"), max_epochs=1,
                          **{**COMMON, "batch_size": 6})
    assert workflow.parser.get_parsed_content("train#trainer").state.iteration == 1


def test_an_unreadable_image_read_by_a_loader_worker_is_one_line_naming_it(tmp_path, capsys):
    """With the uint8 cache off, images are decoded in DataLoader workers, whose errors torch passes on as text."""
    from cxrdoll.cli import main

    datalist = write_tiny_datalist(tmp_path / "data", n_train=8, n_val=4)  # two full batches: no image dropped
    bad = json.loads(datalist.read_text())["training"][3]["image"]
    (datalist.parent / bad).write_bytes(b"not a png")
    rc = main(["sweep-classifiers", "--datalist", str(datalist), "--out", str(tmp_path / "zoo"), "--archs", ARCH,
               "--image-size", "64", "--max-epochs", "1", "--batch-size", "4", "--num-workers", "1",
               "--set", "use_cache=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith(f"error: {datalist.parent / bad}: cannot identify image file"), err[-3:]


def test_relative_image_paths_resolve_against_the_datalists_folder(tmp_path, monkeypatch):
    """Read against the working directory, they were "not found" from any other folder."""
    datalist = write_tiny_datalist(tmp_path / "data", n_train=8, n_val=4)
    text = datalist.read_text().replace(f'"image": "{tmp_path / "data"}/', '"image": "')
    assert '"image": "images/' in text
    datalist.write_text(text)
    monkeypatch.chdir(tmp_path)  # images/ is not here but in data/
    run_bundle(datalist="data/datalist.json", output_dir="out", max_epochs=1, **COMMON)
    run_bundle(configs=("train.json", "evaluate.json"), datalist="data/datalist.json", output_dir="out", **COMMON)
    assert json.loads((tmp_path / "out" / "eval" / "metrics.json").read_text())["last"]["num_samples"] == 4


def test_a_validation_interval_past_max_epochs_still_validates_the_final_weights(trained, tmp_path):
    workflow = run_bundle(datalist=str(trained["datalist"]), output_dir=str(tmp_path / "run"), max_epochs=1,
                          val_interval=2, **COMMON)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1] and (tmp_path / "run" / "model.pt").is_file()
    assert workflow.parser.get_parsed_content("validate#evaluator").state.epoch == 1


def test_sweep_writes_registry_from_finished_runs(trained, tmp_path):
    """A finished architecture is resumed (no more training) and registered with its best AUROC."""
    import hashlib
    import shutil

    from cxrdoll.cli import main

    shutil.copytree(trained["out"], tmp_path / "zoo" / ARCH, ignore=shutil.ignore_patterns("eval", "predictions.csv"))
    before = (tmp_path / "zoo" / ARCH / "checkpoint.pt").read_bytes()
    rc = main(["sweep-classifiers", "--datalist", str(trained["datalist"]), "--out", str(tmp_path / "zoo"),
               "--archs", ARCH, "--image-size", "64", "--max-epochs", "1", "--batch-size", "8", "--num-workers", "0"])
    assert rc == 0
    registry = json.loads((tmp_path / "zoo" / "classifiers.json").read_text())
    best = json.loads((trained["out"] / "metrics.json").read_text())["best"]
    assert registry["data_hash"] == hashlib.sha256(trained["datalist"].read_bytes()).hexdigest()
    (entry,) = registry["classifiers"]
    assert (entry["name"], entry["arch"], entry["image_size"]) == (ARCH, ARCH, 64)
    assert entry["auroc"] == best["auroc"] and entry["mean_auroc"] == best["mean_auroc"]
    model = Path(entry["checkpoint"])
    assert entry["checkpoint_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert (tmp_path / "zoo" / ARCH / "checkpoint.pt").read_bytes() == before  # nothing retrained


def test_register_only_needs_no_training_settings_and_reports_missing_runs(trained, tmp_path, capsys):
    """``--register-only`` registers runs made by ``monai.bundle run`` and names a run that is missing."""
    import shutil

    from cxrdoll.cli import main

    shutil.copytree(trained["out"], tmp_path / "zoo" / ARCH)
    args = ["sweep-classifiers", "--register-only", "--datalist", str(trained["datalist"]),
            "--out", str(tmp_path / "zoo"), "--archs", ARCH]  # no --image-size: the run recorded its own
    assert main(args) == 0
    (entry,) = json.loads((tmp_path / "zoo" / "classifiers.json").read_text())["classifiers"]
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    assert metrics["run"] == {"network_name": ARCH, "image_size": 64, "datalist_sha256": file_sha256(trained["datalist"]),
                              "learning_rate": 0.0001, "weight_decay": 1e-05, "batch_size": 8, "seed": 0,
                              "auroc_mean_over": ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                                                  "Pleural Effusion"]}
    assert entry["mean_auroc"] == metrics["best"]["mean_auroc"] and entry["image_size"] == 64  # not the default 320
    assert "train_seconds" not in entry
    assert main([*args, "resnet18"]) == 2
    assert f"{tmp_path / 'zoo' / 'resnet18' / 'metrics.json'}: file not found" in capsys.readouterr().err


def test_sweep_rejects_unknown_architecture(tmp_path, capsys):
    from cxrdoll.cli import main

    assert main(["sweep-classifiers", "--datalist", "x.json", "--out", str(tmp_path), "--archs", "alexnet"]) == 2
    assert "unknown architecture(s) ['alexnet']" in capsys.readouterr().err


def test_a_misspelt_bundle_override_is_refused_not_ignored(trained, tmp_path, capsys):
    from cxrdoll.cli import main

    rc = main(["sweep-classifiers", "--datalist", str(trained["datalist"]), "--out", str(tmp_path), "--archs", ARCH,
               "--image-size", "64", "--num-workers", "0", "--set", "lerning_rate=0.1"])
    assert rc == 2
    assert "bundle override(s) ['lerning_rate'] not defined in" in capsys.readouterr().err
    assert not (tmp_path / ARCH / "model.pt").exists()


def test_time_schedule_anneals_over_the_training_budget(trained, tmp_path):
    lr = 1e-3
    workflow = run_bundle(datalist=str(trained["datalist"]), output_dir=str(tmp_path / "timed"), lr_schedule="time",
                          max_train_seconds=2.0, max_epochs=1000, val_interval=1000, learning_rate=lr, **COMMON)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch > 1  # the budget, not the epoch count, ended the run
    assert workflow.parser.get_parsed_content("optimizer").param_groups[0]["lr"] < 0.05 * lr
    with pytest.raises(Exception) as failure:  # MONAI wraps it; the cause names the missing setting
        run_bundle(datalist=str(trained["datalist"]), output_dir=str(tmp_path / "no_budget"), lr_schedule="time",
                   **COMMON)
    assert "lr_schedule 'time' anneals over max_train_seconds" in str(failure.value.__cause__)


def test_a_validation_split_that_cannot_select_a_model_is_refused_before_training(tmp_path):
    """Only Cardiomegaly has labels, all negative in validation: the run used to train to its end,
    exit 0 and save no model, while metrics.json named one."""
    datalist = write_tiny_datalist(tmp_path / "data", n_train=16, n_val=4)
    doc = json.loads(datalist.read_text())
    cardio = doc["observations"].index("Cardiomegaly")
    for item in doc["validation"]:
        item["label"][cardio] = 0.0
    for item in doc["training"] + doc["validation"]:  # Pneumothorax: both classes, outside the competition five
        item["label"][doc["observations"].index("Pneumothorax")] = float(item["label"][cardio] or item is doc["validation"][0])
    datalist.write_text(json.dumps(doc))
    with pytest.raises(Exception) as caught:
        run_bundle(datalist=str(datalist), output_dir=str(tmp_path / "out"), max_epochs=1, **COMMON)
    assert str(user_error(caught.value)) == (
        f"{datalist}: no observation of auroc_mean_over (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural "
        "Effusion) has both positive and negative labels in the validation split, so no AUROC selects a model and "
        "none would be saved; those that do: Pneumothorax. Set --auroc_mean_over to some of them, or add such images")
    assert not (tmp_path / "out" / "model.pt").exists()
    run_bundle(datalist=str(datalist), output_dir=str(tmp_path / "ptx"), max_epochs=1,
               auroc_mean_over=["Pneumothorax"], **COMMON)
    record = json.loads((tmp_path / "ptx" / "metrics.json").read_text())
    assert record["mean_over"] == ["Pneumothorax"] and record["best"]["mean_auroc"] == record["best"]["auroc"]["Pneumothorax"]
    assert (tmp_path / "ptx" / "model.pt").is_file()
    # evaluation selects nothing: it runs on that split, over the mean the model was trained with
    run_bundle(configs=("train.json", "evaluate.json"), datalist=str(datalist), output_dir=str(tmp_path / "ptx"),
               **COMMON)
    evaluated = json.loads((tmp_path / "ptx" / "eval" / "metrics.json").read_text())
    assert evaluated["mean_over"] == ["Pneumothorax"] and evaluated["last"]["mean_auroc"] == record["best"]["mean_auroc"]
    with pytest.raises(Exception) as caught:  # a resume under another objective would compare unlike means
        run_bundle(datalist=str(datalist), output_dir=str(tmp_path / "ptx"), max_epochs=2,
                   auroc_mean_over=["Pneumothorax", "Cardiomegaly"], **COMMON)
    assert "auroc_mean_over=['Pneumothorax'], not ['Pneumothorax', 'Cardiomegaly']" in str(user_error(caught.value))
    with pytest.raises(Exception) as caught:
        run_bundle(datalist=str(datalist), output_dir=str(tmp_path / "bad"), max_epochs=1,
                   auroc_mean_over=["Pneumothorax", "Cardiomegally"], **COMMON)
    assert "auroc_mean_over ['Pneumothorax', 'Cardiomegally']: expected CheXpert observation names, got ['Cardiomegally']" in (
        str(user_error(caught.value)))
