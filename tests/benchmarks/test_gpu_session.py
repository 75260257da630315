"""The one-lease GPU script, in its CPU smoke mode: every step runs, and the results come back packed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["train_throughput", "train_throughput_autotune", "train_throughput_before", "train_throughput_nopin", "ig_throughput",
         "seg_throughput", "dicom_latency", "classifier_quality", "ig_throughput_trained"]


@pytest.mark.slow
def test_smoke_session_runs_every_step_and_packs_the_results(tmp_path, shared_data):
    # One OpenMP thread per step, as the conftest keeps for this process: two threads spin-wait for each other
    # on a 2-core machine with anything else runnable (the session took 302 s of its 400 s budget beside two
    # busy processes, 162 s with one thread; a step past its own limit fails the test).
    env = os.environ | {"PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "GPU_SESSION_WORK": str(tmp_path / "work"),
                        "DICOM_DIR": str(shared_data / "dicom"), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "--smoke", "400"], env=env, check=True,
                   capture_output=True, timeout=600)
    log = (tmp_path / "out" / "gpu_session.log").read_text()
    for step in STEPS:
        assert f"== {step}: exit 0 after" in log, f"{step} did not finish cleanly:\n{log[-3000:]}"
    with tarfile.open(tmp_path / "out" / "gpu_results.tgz") as packed:
        names = {Path(n).name for n in packed.getnames()}
    assert {f"{step}{ext}" for step in ("train_throughput", "seg_throughput", "dicom_latency_gpu")
            for ext in (".json", ".md")} <= names
    assert {"ig_throughput.json", "ig_throughput_trained.json", "classifier_quality_gpu.json"} <= names
    autotuned = json.loads(packed_member(tmp_path / "out" / "gpu_results.tgz", "train_throughput_autotune.json"))
    assert autotuned["settings"]["cudnn"] == {"deterministic": False, "benchmark": True}
    traces = sorted(p.name for p in (tmp_path / "out").glob("*.json.gz"))  # beside the log, not in the results
    assert traces == ["train_throughput_bare.json.gz", "train_throughput_pipeline.json.gz"]


def test_the_before_step_keeps_monai_gradient_scaler_as_the_0744_run_did():
    """It drops the classifier's first two handlers, which must be the one that removes the scaler for
    bf16 and the divergence check (added after that run)."""
    config = json.loads((ROOT / "bundles" / "cxr_classifier" / "configs" / "train.json").read_text())
    assert [h["_target_"] for h in config["train"]["handlers"][:2]] == [
        "cxrdoll.engines.amp.GradScalerOnlyForFloat16", "cxrdoll.engines.divergence.StopOnDivergence"]
    assert "--override 'train#trainer#train_handlers=$@train#handlers[2:]'" in (
        ROOT / "benchmarks" / "gpu_session.sh").read_text()


def packed_member(archive: Path, name: str) -> str:
    """The text of the member called ``name`` in a packed results archive."""
    with tarfile.open(archive) as packed:
        (member,) = [m for m in packed.getmembers() if Path(m.name).name == name]
        return packed.extractfile(member).read().decode()
