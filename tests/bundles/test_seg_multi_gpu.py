"""multi_gpu_train.json of cxr_seg_pretrain under torchrun: two CPU processes (gloo), metrics gathered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bundles.seg_data import write_tiny_doll

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_seg_pretrain"


@pytest.mark.slow
def test_two_process_pretraining_writes_one_model_and_history(tmp_path):
    datalist = write_tiny_doll(tmp_path / "doll", n_train=4, n_val=3)
    out = tmp_path / "out"
    configs = [str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "multi_gpu_train.json")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", json.dumps(configs), "--bundle_root", str(BUNDLE),
           "--datalist", str(datalist), "--output_dir", str(out), "--encoder_name", "densenet_tiny",
           "--decoder_channels", "[32,16,16,8,8]", "--image_size", "32", "--batch_size", "2",
           "--num_workers", "0", "--max_epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((out / "validation_history.json").read_text())
    # 3 validation images split 2 + 1 over the ranks; the gathered Dice covers the positive one
    assert len(history["history"]) == 1 and history["history"][0]["val_mean_dice"] is not None
    assert (out / "model.pt").is_file()


def test_ranks_above_zero_drop_exactly_the_three_logging_handlers():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "multi_gpu_train.json")])
    assert parser["train#trainer#train_handlers"] == "$@train#handlers[: -3 if torch.distributed.get_rank() > 0 else None]"
    targets = [h["_target_"] if isinstance(h, dict) else h for h in parser["train#handlers"]]
    assert targets[-3:] == [
        "cxrdoll.engines.progress.StatsHandler", "cxrdoll.engines.progress.TensorBoardStatsHandler",
        "cxrdoll.engines.progress.LossProgressBar"]
