"""The sample-efficiency experiment runs every starting point through the adapter bundle and reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cxrdoll.cli import main
from cxrdoll.engines.seg_network import pretraining_segmenter
from cxrdoll.experiments.sample_efficiency import KEY, Run, markdown, paired_comparison, parse_sizes, summarise
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
        assert len(start["sizes"]["2"]["dice_per_epoch"]) == 2
    assert len(report["runs"]) == 8 and all(len(r["history"]) == 2 for r in report["runs"])
    assert report["seconds_in_runs"] == pytest.approx(sum(r["history"][-1]["elapsed_s"] for r in report["runs"]))
    table = (out / "results.md").read_text()
    assert "| labelled images | from scratch | classifier backbone only | DoLL + adapters | DoLL + full fine-tune |" in table
    assert "| all (4) |" in table and f"| trainable parameters | {params['scratch']:,} |" in table
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
    with pytest.raises(ValueError, match="--sizes: 0 is not a positive number of images"):
        parse_sizes("0,4")


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
                "max_epochs": 2, "samples_per_epoch": 4, "seeds": "0,1,2", "device": "cpu"}
    table = markdown(summary, settings, None, paired)
    assert "| labelled images | vs from scratch | vs classifier backbone only |" in table
    assert f"| 8 | {scratch['mean_diff']:+.3f} ± {scratch['std_diff']:.3f} (2/3) |" in table
