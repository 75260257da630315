"""The sample-efficiency experiment runs every starting point through the adapter bundle and reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrdoll.cli import main
from cxrdoll.engines.seg_network import pretraining_segmenter
from cxrdoll.experiments.sample_efficiency import (KEY, Run, check_checkpoints, check_sizes, markdown, paired_comparison, parse_sizes,
                                                  retrain_reason, run_settings, shuffled_datalists, summarise)
from cxrdoll.io import file_sha256, save_png_atomic, write_json_atomic
from cxrdoll.networks import build_classifier
from tests.bundles.seg_data import write_tiny_downstream

DECODER = "32,16,16,8,8"


def test_tiny_run_writes_table_plot_and_per_epoch_dice(tmp_path):
    datalist = write_tiny_downstream(tmp_path / "down", n_train=4, n_val=2)
    pretrained, classifier = tmp_path / "doll.pt", tmp_path / "cls.pt"
    torch.save(pretraining_segmenter("densenet_tiny", decoder_channels=[32, 16, 16, 8, 8]).state_dict(), pretrained)
    torch.save(build_classifier("densenet_tiny").state_dict(), classifier)
    out = tmp_path / "exp"
    argv = ["experiment", "sample-efficiency", "--datalist", str(datalist), "--out", str(out),
            "--pretrained-ckpt", str(pretrained), "--classifier-ckpt", str(classifier),
            "--encoder-name", "densenet_tiny", "--decoder-channels", DECODER, "--image-size", "32",
            "--sizes", "2,all", "--seeds", "0", "--max-epochs", "2", "--samples-per-epoch", "2", "--batch-size", "2",
            "--device", "cpu"]
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    summary = report["summary"]
    assert set(summary) == {"scratch", "backbone", "doll_adapters", "doll_full"}
    params = {k: v["trainable_parameters"] for k, v in summary.items()}
    assert params["doll_adapters"] < params["doll_full"] == params["scratch"] == params["backbone"]
    assert summary["doll_full"]["total_parameters"] == params["doll_full"]
    for start in summary.values():
        assert set(start["sizes"]) == {"2", "all"} and start["sizes"]["all"]["n_images"] == 4
        assert len(start["sizes"]["2"]["dice_per_epoch"]) == 2 and start["sizes"]["2"]["n_images"] == 2
    assert len(report["runs"]) == 8 and all(len(r["history"]) == 2 for r in report["runs"])
    assert not list((out / "runs").rglob("checkpoint.pt"))  # an unfinished run is retrained, not resumed
    assert report["seconds_in_runs"] == pytest.approx(sum(r["history"][-1]["elapsed_s"] for r in report["runs"]))
    table = (out / "results.md").read_text()
    assert "| labelled images | from scratch | classifier backbone only | DoLL + adapters | DoLL + full fine-tune |" in table
    assert "| all (4) |" in table and f"| trainable parameters | {params['scratch']:,} |" in table
    assert "Validation mean Dice per epoch with 2 labelled images (mean over seeds):" in table  # no 8: the first size
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second call reuses the finished runs instead of training again
    first_model = (out / "runs" / "scratch" / "n2" / "seed0" / "model.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "runs" / "scratch" / "n2" / "seed0" / "model.pt").stat().st_mtime_ns == first_model
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["seconds_in_runs"] == report["seconds_in_runs"]  # reused runs keep their recorded time


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    datalist = write_tiny_downstream(tmp_path / "down", n_train=2, n_val=1)
    code = main(["experiment", "sample-efficiency", "--datalist", str(datalist), "--out", str(tmp_path / "o"),
                 "--starts", "doll_adapters", "--device", "cpu"])
    assert code == 2 and "starting point 'doll_adapters' needs --pretrained-ckpt" in capsys.readouterr().err
    assert parse_sizes("4, 8,all") == [4, 8, None]
    with pytest.raises(argparse.ArgumentTypeError, match="'0' in '0,4' is not a positive number of images"):
        parse_sizes("0,4")


@pytest.mark.parametrize("option, value, message", [
    ("--seeds", "0,0", "argument --seeds: '0' is given twice in '0,0'"),
    ("--sizes", "4,8,4", "argument --sizes: '4' is given twice in '4,8,4'"),
    ("--sizes", "all,all", "argument --sizes: 'all' is given twice in 'all,all'"),
    ("--starts", "scratch,scratch", "argument --starts: 'scratch' is given twice in 'scratch,scratch'"),
    ("--sizes", "abc", "argument --sizes: 'abc' in 'abc' is not a positive number of images or 'all'"),
    ("--seeds", ",", "argument --seeds: '' in ',' is not a seed"),
    ("--seeds", "-1", "argument --seeds: '-1' in '-1' is not a seed"),
    ("--starts", "scratch,doll", "argument --starts: 'doll' in 'scratch,doll' is not a starting point"),
    ("--image-size", "33", "argument --image-size: image size 33 px is not a multiple of 32 px, which the "
                           "segmentation network needs for its skip connections to line up (try 32 or 64)"),
    ("--image-size", "16", "argument --image-size: image size 16 px is below 32 px, the smallest side the networks "
                           "take (they downsample 32x)"),
    ("--image-size", "1e3", "argument --image-size: image size '1e3' is not a whole number of pixels"),
    ("--max-epochs", "0", "argument --max-epochs: '0' is not a positive whole number"),
    ("--batch-size", "x", "argument --batch-size: 'x' is not a positive whole number"),
    ("--learning-rate", "0", "argument --learning-rate: '0' is not a positive number"),
    ("--learning-rate", "nan", "argument --learning-rate: 'nan' is not a positive number"),
    ("--learning-rate", "inf", "argument --learning-rate: 'inf' is not a positive number"),
    ("--seeds", "4294967296", "argument --seeds: '4294967296' in '4294967296' is not a seed (a whole number from 0 to "
                              "4294967295)"),
    ("--decoder-channels", "64,x", "argument --decoder-channels: 'x' in '64,x' is not a positive whole number"),
    ("--decoder-channels", "64,0", "argument --decoder-channels: '0' in '64,0' is not a positive whole number"),
    ("--num-workers", "-1", "argument --num-workers: '-1' is not a whole number >= 0"),
])
def test_bad_option_values_are_refused_naming_the_option(tmp_path, capsys, option, value, message):
    """Refused while parsing, before any file is written; duplicates would count one run twice."""
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "sample-efficiency", "--datalist", str(tmp_path / "d.json"), "--out", str(out),
              option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_changed_setting_retrains_only_the_runs_it_decides(tmp_path, capsys):
    """A finished run is reused only under the settings it was trained with: results.json must never
    state a learning rate, checkpoint or switch that its runs were not trained with."""
    datalist = write_tiny_downstream(tmp_path / "down", n_train=2, n_val=1)
    pretrained = tmp_path / "doll.pt"
    torch.save(pretraining_segmenter("densenet_tiny", decoder_channels=[32, 16, 16, 8, 8]).state_dict(), pretrained)
    out = tmp_path / "exp"
    argv = ["experiment", "sample-efficiency", "--datalist", str(datalist), "--out", str(out),
            "--starts", "scratch,doll_adapters", "--pretrained-ckpt", str(pretrained), "--encoder-name", "densenet_tiny",
            "--decoder-channels", DECODER, "--image-size", "32", "--sizes", "2", "--seeds", "0", "--max-epochs", "1",
            "--samples-per-epoch", "2", "--batch-size", "2", "--device", "cpu"]
    models = {start: out / "runs" / start / "n2" / "seed0" / "model.pt" for start in ("scratch", "doll_adapters")}

    def call(*extra: str) -> tuple[dict, str, dict[str, bool]]:
        """results.json, stdout, and which runs trained in this call."""
        before = {s: m.stat().st_mtime_ns if m.exists() else None for s, m in models.items()}
        assert main(argv + list(extra)) == 0
        trained = {s: m.stat().st_mtime_ns != before[s] for s, m in models.items()}
        return json.loads((out / "results.json").read_text()), capsys.readouterr().out, trained

    report, log, trained = call()
    assert trained == {"scratch": True, "doll_adapters": True} and "retraining" not in log
    assert {r["run_settings"]["learning_rate"] for r in report["runs"]} == {0.003}

    report, log, trained = call("--learning-rate", "0.5")
    assert trained == {"scratch": True, "doll_adapters": True}
    assert "scratch/n2/seed0: retraining, settings changed: learning_rate 0.003 -> 0.5" in log
    assert report["settings"]["learning_rate"] == 0.5
    assert all(r["run_settings"]["learning_rate"] == 0.5 for r in report["runs"])
    assert json.loads((models["scratch"].parent / "run_settings.json").read_text())["learning_rate"] == 0.5

    # the same checkpoint path with other weights: only the start that loads it retrains
    torch.save(pretraining_segmenter("densenet_tiny", decoder_channels=[32, 16, 16, 8, 8]).state_dict(), pretrained)
    report, log, trained = call("--learning-rate", "0.5")
    assert trained == {"scratch": False, "doll_adapters": True}
    assert "doll_adapters/n2/seed0: retraining, settings changed: checkpoint_sha256" in log

    report, log, trained = call("--learning-rate", "0.5", "--freeze-decoder")
    assert trained == {"scratch": False, "doll_adapters": True} and "freeze_decoder False -> True" in log
    adapters = next(r for r in report["runs"] if r["start"] == "doll_adapters")
    assert adapters["run_settings"]["freeze_decoder"] is True and report["settings"]["freeze_decoder"] is True

    # a mask rewritten in place under the same datalist: every run sees the validation masks
    mask = datalist.parent / "masks" / "bar" / "validation_0.png"
    save_png_atomic(mask, np.zeros((32, 32), np.uint8))
    _, log, trained = call("--learning-rate", "0.5", "--freeze-decoder")
    assert trained == {"scratch": True, "doll_adapters": True}
    assert "scratch/n2/seed0: retraining, settings changed: data_fingerprint" in log

    # a run without recorded settings (older version, or killed) is not trusted
    (models["scratch"].parent / "run_settings.json").unlink()
    _, log, trained = call("--learning-rate", "0.5", "--freeze-decoder")
    assert trained == {"scratch": True, "doll_adapters": False}
    assert "scratch/n2/seed0: retraining, no run_settings.json" in log


def test_garbage_checkpoint_is_one_line_naming_it(tmp_path, capsys):
    """The checkpoint's error surfaces from inside the bundle, wrapped in MONAI's RuntimeErrors."""
    datalist = write_tiny_downstream(tmp_path / "down", n_train=2, n_val=1)
    garbage = tmp_path / "doll.pt"
    garbage.write_text("not a checkpoint\n")
    code = main(["experiment", "sample-efficiency", "--datalist", str(datalist), "--out", str(tmp_path / "o"),
                 "--starts", "doll_adapters", "--pretrained-ckpt", str(garbage), "--encoder-name", "densenet_tiny",
                 "--decoder-channels", DECODER, "--image-size", "32", "--sizes", "1", "--seeds", "0",
                 "--max-epochs", "1", "--samples-per-epoch", "1", "--batch-size", "1", "--device", "cpu"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err[-1].startswith(f"error: {garbage}: cannot load")


def test_paired_comparison_differences_by_seed_and_counts_wins():
    def history(dice: float) -> dict:
        return {"num_train": 8, "trainable_parameters": 10, "total_parameters": 10,
                "history": [{"epoch": 1, KEY: 0.0}, {"epoch": 2, KEY: dice}]}

    dice = {  # (start, seed) -> last-epoch Dice, 8 labelled images
        ("doll_adapters", 0): 0.50, ("doll_adapters", 1): 0.40, ("doll_adapters", 2): 0.60,
        ("scratch", 0): 0.45, ("scratch", 1): 0.42, ("scratch", 2): 0.50,
        ("backbone", 0): 0.30, ("backbone", 1): None, ("backbone", 2): 0.55,  # None: Dice undefined, scores 0
    }
    results = [(Run(start, 8, seed), history(value)) for (start, seed), value in dice.items()]
    paired = paired_comparison(results)
    assert set(paired) == {"8"} and set(paired["8"]) == {"scratch", "backbone"}
    scratch = paired["8"]["scratch"]
    assert scratch["mean_diff"] == pytest.approx((0.05 - 0.02 + 0.10) / 3)
    assert scratch["std_diff"] == pytest.approx(np.std([0.05, -0.02, 0.10], ddof=1))
    assert (scratch["wins"], scratch["seeds"]) == (2, 3)
    assert paired["8"]["backbone"]["wins"] == 3
    summary = summarise(results, [8])
    settings = {"datalist": "d.json", "encoder_name": "resnet10", "decoder": "unet", "image_size": 64,
                "max_epochs": 2, "samples_per_epoch": 4, "seeds": [0, 1, 2], "device": "cpu"}
    table = markdown(summary, settings, None, paired)
    assert "| labelled images | vs from scratch | vs classifier backbone only |" in table.splitlines()  # not vs itself
    assert f"| 8 | {scratch['mean_diff']:+.3f} ± {scratch['std_diff']:.3f} (2/3) |" in table


def test_one_seed_reports_no_spread_rather_than_zero():
    history = {"num_train": 8, "trainable_parameters": 10, "total_parameters": 10,
               "history": [{"epoch": 1, KEY: 0.4}, {"epoch": 2, KEY: 0.5}]}
    results = [(Run("doll_adapters", 8, 0), history), (Run("scratch", 8, 0), {**history, "history": [{"epoch": 1, KEY: 0.3}]})]
    summary, paired = summarise(results, [8]), paired_comparison(results)
    assert summary["doll_adapters"]["sizes"]["8"]["final_std"] is None
    assert paired["8"]["scratch"] == {"mean_diff": pytest.approx(0.2), "std_diff": None, "wins": 1, "seeds": 1}
    settings = {"datalist": "d.json", "encoder_name": "resnet10", "decoder": "unet", "image_size": 64,
                "max_epochs": 2, "samples_per_epoch": 4, "seeds": [0], "device": "cpu"}
    table = markdown(summary, settings, None, paired)
    assert "| 8 | 0.300 (0.300) | 0.500 (0.500) |" in table and "| 8 | +0.200 (1/1) |" in table
    assert "±" not in table.split("Validation mean Dice after")[1].split("\n\n")[1]


@pytest.mark.parametrize("change", [
    {"batch_size": 8}, {"samples_per_epoch": 32}, {"image_size": 96}, {"encoder_name": "resnet10"},
    {"decoder": "psp"}, {"decoder_channels": [64, 32, 16, 8, 8]}, {"max_epochs": 3}, {"learning_rate": 0.5},
    {"freeze_decoder": True}, {"device": "cuda"},
])
def test_every_setting_that_decides_a_run_invalidates_it(tmp_path, change):
    settings = {"datalist": "/data/d.json", "encoder_name": "densenet_tiny", "decoder": "unet",
                "decoder_channels": [32, 16, 16, 8, 8], "image_size": 64, "batch_size": 4, "max_epochs": 2,
                "samples_per_epoch": 16, "learning_rate": 0.003, "freeze_decoder": False, "device": "cpu"}
    ckpt = {"pretrained": {"checkpoint": "/ck/doll.pt", "checkpoint_sha256": "a" * 64}}
    run = Run("doll_adapters", 4, 0)
    stored = run_settings(run, "b" * 64, "f" * 64, settings, ckpt)
    write_json_atomic(tmp_path / "run_settings.json", stored)
    write_json_atomic(tmp_path / "validation_history.json", {"history": [{}, {}]})
    assert retrain_reason(tmp_path, run_settings(run, "b" * 64, "f" * 64, settings, ckpt)) is None
    (key, value), = change.items()
    reason = retrain_reason(tmp_path, run_settings(run, "b" * 64, "f" * 64, {**settings, **change}, ckpt))
    assert reason == f"settings changed: {key} {stored[key]!r} -> {value!r}"
    moved = {"pretrained": {**ckpt["pretrained"], "checkpoint": "/ck/other.pt"}}  # same bytes elsewhere: reused
    assert retrain_reason(tmp_path, run_settings(run, "b" * 64, "f" * 64, {**settings, "datalist": "/moved/d.json"}, moved)) is None
    other = {"pretrained": {**ckpt["pretrained"], "checkpoint_sha256": "c" * 64}}
    assert "checkpoint_sha256" in retrain_reason(tmp_path, run_settings(run, "b" * 64, "f" * 64, settings, other))
    assert "datalist_sha256" in retrain_reason(tmp_path, run_settings(run, "d" * 64, "f" * 64, settings, ckpt))
    assert "data_fingerprint" in retrain_reason(tmp_path, run_settings(run, "b" * 64, "e" * 64, settings, ckpt))
    # scratch loads no checkpoint and has no decoder to freeze: neither is part of its settings
    scratch = run_settings(Run("scratch", 4, 0), "b" * 64, "f" * 64, settings, ckpt)
    assert "checkpoint" not in scratch and "freeze_decoder" not in scratch
    # nor does doll_full, which fine-tunes everything: --freeze-decoder must not retrain it
    assert "freeze_decoder" not in run_settings(Run("doll_full", 4, 0), "b" * 64, "f" * 64, settings, ckpt)


def _history(*dice: float | None) -> dict:
    return {"num_train": 8, "trainable_parameters": 1234, "total_parameters": 5000,
            "history": [{"epoch": e, KEY: d} for e, d in enumerate(dice, 1)]}


def test_summary_curves_best_epochs_and_the_per_epoch_table():
    """Two seeds of three epochs: the curve is the mean over seeds per epoch, best the best epoch per seed."""
    results = [(Run("doll_adapters", 8, 0), _history(0.2, 0.6, 0.4)), (Run("doll_adapters", 8, 1), _history(0.4, 0.5, 0.5))]
    cell = summarise(results, [8])["doll_adapters"]["sizes"]["8"]
    assert cell["dice_per_epoch"] == pytest.approx([0.3, 0.55, 0.45])
    assert cell["final_mean"] == pytest.approx(0.45) and cell["best_mean"] == pytest.approx(0.55)
    assert cell["final_std"] == pytest.approx(0.0707107, abs=1e-6)  # sd of 0.4 and 0.5 with n - 1
    settings = {"datalist": "d.json", "encoder_name": "resnet10", "decoder": "unet", "image_size": 64, "max_epochs": 3,
                "samples_per_epoch": 4, "seeds": [0, 1], "device": "cpu", "freeze_decoder": False}
    table = markdown(summarise(results, [8]), settings, "8")
    assert "| 8 | 0.450 ± 0.071 (0.550) |" in table and "| trainable parameters | 1,234 |" in table
    assert table.endswith("| 1 | 0.300 |\n| 2 | 0.550 |\n| 3 | 0.450 |\n")
    assert "adapters, head and the decoder (encoder frozen)." in table
    assert "adapters, head and nothing else (decoder frozen)." in markdown(
        summarise(results, [8]), {**settings, "freeze_decoder": True}, None)


def test_a_tie_is_not_a_win_and_seeds_pair_with_their_own_seed():
    results = [(Run("doll_adapters", 4, 0), _history(0.5)), (Run("doll_adapters", 4, 1), _history(0.7)),
               (Run("scratch", 4, 0), _history(0.5)), (Run("scratch", 4, 1), _history(0.4))]
    assert paired_comparison(results)["4"]["scratch"] == {
        "mean_diff": pytest.approx(0.15), "std_diff": pytest.approx(np.std([0.0, 0.3], ddof=1)), "wins": 1, "seeds": 2}


def test_each_seed_shuffles_the_training_list_its_own_way_and_sizes_beyond_the_split_are_refused(tmp_path):
    import random

    datalist = write_tiny_downstream(tmp_path / "down", n_train=5, n_val=1)
    original = [item["id"] for item in json.loads(datalist.read_text())["training"]]
    paths = shuffled_datalists(datalist, [0, 7], tmp_path / "lists")
    for seed, path in paths.items():
        expected = list(original)
        random.Random(seed).shuffle(expected)
        written = json.loads(path.read_text())
        assert [item["id"] for item in written["training"]] == expected
        assert [item["id"] for item in written["validation"]] == ["validation_0"]
    assert paths[0].name == "datalist_seed0.json"
    check_sizes(datalist, [5, None])  # the whole split is a size it has
    with pytest.raises(ValueError, match=r"--sizes \[6\]: the training split of .* has 5 images"):
        check_sizes(datalist, [2, 6])


def test_each_start_hands_the_bundle_its_checkpoint_labelled_images_and_seed(tmp_path, monkeypatch):
    """The overrides of one bundle run, as the module docstring lists the starting points."""
    import monai.bundle

    import cxrdoll.experiments.sample_efficiency as se

    seen = []

    class Recording:
        def __init__(self, **kwargs):
            seen.append(kwargs)

        def initialize(self):
            pass

        def run(self):
            write_json_atomic(Path(seen[-1]["output_dir"]) / "validation_history.json", {"history": [{}]})

        def finalize(self):
            pass

    monkeypatch.setattr(monai.bundle, "ConfigWorkflow", Recording)
    settings = {"num_workers": 0, "freeze_decoder": False, "encoder_name": "densenet_tiny", "decoder": "unet",
                "decoder_channels": [32, 16, 16, 8, 8], "image_size": 32, "batch_size": 2, "max_epochs": 3,
                "samples_per_epoch": 2, "learning_rate": 0.01, "device": "cpu"}
    for start, checkpoint in (("scratch", None), ("backbone", "/c/cls.pt"), ("doll_adapters", "/c/doll.pt"),
                              ("doll_full", "/c/doll.pt")):
        wanted = {"mode": se.STARTS[start]["mode"], **({"checkpoint": checkpoint} if checkpoint else {})}
        se.train_run(Run(start, 4, 7), tmp_path / "d.json", tmp_path / start, wanted, settings)
    by_start = dict(zip(("scratch", "backbone", "doll_adapters", "doll_full"), seen))
    assert [(k["mode"], k["init_ckpt"], k["pretrained_ckpt"]) for k in by_start.values()] == [
        ("scratch", None, None), ("full", "/c/cls.pt", None), ("adapters", None, "/c/doll.pt"), ("full", None, "/c/doll.pt")]
    for start, k in by_start.items():
        assert (k["num_train"], k["seed"], k["datalist"], k["output_dir"]) == (4, 7, str(tmp_path / "d.json"),
                                                                               str(tmp_path / start))
        assert k["learning_rate"] == 0.01 and k["max_epochs"] == 3 and k["train#checkpoint#interval"] == 3


def test_a_checkpoint_that_is_a_folder_is_refused_up_front(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--pretrained-ckpt: .*: file not found"):
        check_checkpoints(["doll_full"], {"pretrained_ckpt": str(tmp_path)})
    with pytest.raises(ValueError, match="starting point 'backbone' needs --classifier-ckpt"):
        check_checkpoints(["scratch", "backbone"], {})


def test_each_seed_trains_on_and_records_its_own_shuffled_list_and_all_has_a_curve(tmp_path, monkeypatch, capsys):
    """Seeds differ in the images they see: each run must get (and its run_settings name) its own seed's
    list. With 'all' as the only size, the per-epoch table is that of 'all' (it looked up 'None')."""
    import monai.bundle

    trained = []

    class Fake:  # the bundle run, reduced to the history it writes
        def __init__(self, **kwargs):
            trained.append(kwargs)

        def initialize(self):
            pass

        def run(self):
            history = {"num_train": 4, "trainable_parameters": 10, "total_parameters": 10,
                       "history": [{"epoch": 1, KEY: 0.2}, {"epoch": 2, KEY: 0.4}]}
            write_json_atomic(Path(trained[-1]["output_dir"]) / "validation_history.json", history)

        def finalize(self):
            pass

    monkeypatch.setattr(monai.bundle, "ConfigWorkflow", Fake)
    datalist = write_tiny_downstream(tmp_path / "down", n_train=4, n_val=1)
    out = tmp_path / "exp"
    assert main(["experiment", "sample-efficiency", "--datalist", str(datalist), "--out", str(out), "--starts", "scratch",
                 "--sizes", "all", "--seeds", "0,1", "--image-size", "32", "--device", "cpu"]) == 0
    lists = [out / "datalists" / f"datalist_seed{seed}.json" for seed in (0, 1)]
    assert file_sha256(lists[0]) != file_sha256(lists[1])  # else the pairing below could not tell them apart
    assert [k["datalist"] for k in trained] == [str(p) for p in lists]
    report = json.loads((out / "results.json").read_text())
    assert [r["run_settings"]["datalist_sha256"] for r in report["runs"]] == [file_sha256(p) for p in lists]
    table = (out / "results.md").read_text()
    assert "Validation mean Dice per epoch with all labelled images (mean over seeds):" in table
    assert table.endswith("| 1 | 0.200 |\n| 2 | 0.400 |\n")
