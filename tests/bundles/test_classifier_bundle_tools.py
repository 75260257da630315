"""MONAI bundle tooling on the cxr_classifier bundle: metadata schema, net in/out, TorchScript export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.engines.bundle_run import DEFAULT_BUNDLE_ROOT
from cxrdoll.networks import build_classifier

CONFIGS = DEFAULT_BUNDLE_ROOT / "configs"
META = CONFIGS / "metadata.json"
SCHEMA = Path(__file__).resolve().parents[2] / "cxrdoll" / "resources" / "meta_schema.json"
PROJECT = Path(__file__).resolve().parents[2]


def test_metadata_verifies_offline_against_shipped_schema():
    verify_metadata(meta_file=str(META), filepath=str(SCHEMA))


def test_schema_rejects_missing_required_field_and_wrong_types(tmp_path):
    meta = json.loads(META.read_text())
    del meta["task"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'task' is a required property"):
        verify_metadata(meta_file=str(bad), filepath=str(SCHEMA))
    meta = json.loads(META.read_text())
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "1"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="Failed validating"):
        verify_metadata(meta_file=str(bad), filepath=str(SCHEMA))


def test_network_data_format_describes_the_network():
    fmt = json.loads(META.read_text())["network_data_format"]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    assert (image["num_channels"], image["dtype"], image["value_range"]) == (1, "float32", [0, 1])
    assert pred["num_channels"] == len(OBSERVATIONS)
    assert [pred["channel_def"][str(i)] for i in range(len(OBSERVATIONS))] == list(OBSERVATIONS)
    out = build_classifier("densenet_tiny").eval()(torch.rand(2, 1, 64, 96))
    assert out.shape == (2, len(OBSERVATIONS)) and out.dtype == torch.float32


@pytest.mark.parametrize("arch", ["densenet121", "resnet10"])
def test_verify_net_in_out(arch):
    verify_net_in_out(net_id="network_def", meta_file=str(META), config_file=str(CONFIGS / "train.json"),
                      device="cpu", network_name=arch)


def test_ckpt_export_torchscript_matches_eager(tmp_path):
    net = build_classifier("resnet10").eval()
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(ckpt), meta_file=str(META),
                config_file=str(CONFIGS / "train.json"), network_name="resnet10")
    scripted = torch.jit.load(str(ts))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_multi_gpu_config_overrides_parse():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    assert parser["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert parser["train#dataloader#sampler"] == "@train#sampler"
    assert parser["validate#dataloader#sampler"] == "@validate#sampler"
    assert parser["train#dataloader#shuffle"] is False
    # Rank > 0 drops exactly the three logging handlers (stats, TensorBoard, progress bar).
    targets = [h["_target_"] if isinstance(h, dict) else h for h in parser["train#handlers"]]
    assert targets[-3:] == [
        "cxrdoll.engines.progress.StatsHandler", "cxrdoll.engines.progress.TensorBoardStatsHandler",
        "cxrdoll.engines.progress.LossProgressBar"]
    assert parser["dist_backend"] == "$'nccl' if torch.cuda.is_available() else 'gloo'"


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path):
    from tests.bundles.classifier_data import write_tiny_datalist

    datalist = write_tiny_datalist(tmp_path / "data", n_train=8, n_val=6)
    out = tmp_path / "out"
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(DEFAULT_BUNDLE_ROOT),
           "--datalist", str(datalist), "--output_dir", str(out), "--network_name", "densenet_tiny",
           "--image_size", "32", "--batch_size", "2", "--num_workers", "0", "--max_epochs", "1"]
    result = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2  # 8 images over 2 ranks, batch 2: 2 iterations each
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["num_samples"] == 6  # validation gathered from both ranks, no padding
    build_classifier("densenet_tiny").load_state_dict(torch.load(out / "model.pt", weights_only=True))
