"""The sample-efficiency experiment runs every starting point through the adapter bundle and reports."""

from __future__ import annotations

import json

import pytest
import torch

from cxrdoll.cli import main
from cxrdoll.engines.seg_network import pretraining_segmenter
from cxrdoll.experiments.sample_efficiency import parse_sizes
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
    table = (out / "results.md").read_text()
    assert "| labelled images | from scratch | classifier backbone only | DoLL + adapters | DoLL + full fine-tune |" in table
    assert "| all (4) |" in table and f"| trainable parameters | {params['scratch']:,} |" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second call reuses the finished runs instead of training again
    first_model = (out / "runs" / "scratch" / "n2" / "seed0" / "model.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "runs" / "scratch" / "n2" / "seed0" / "model.pt").stat().st_mtime_ns == first_model


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    datalist = write_tiny_downstream(tmp_path / "down", n_train=2, n_val=1)
    code = main(["experiment", "sample-efficiency", "--datalist", str(datalist), "--out", str(tmp_path / "o"),
                 "--starts", "doll_adapters", "--device", "cpu"])
    assert code == 2 and "starting point 'doll_adapters' needs --pretrained-ckpt" in capsys.readouterr().err
    assert parse_sizes("4, 8,all") == [4, 8, None]
    with pytest.raises(ValueError, match="--sizes: 0 is not a positive number of images"):
        parse_sizes("0,4")
