"""Shared fixtures: the real test data beside the project, and small synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXR_TEST_DATA", PROJECT_ROOT / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests run tiny networks: one intra-op thread is fastest, and two OpenMP threads on a busy
    2-core machine can spin ~100x slower. Subprocesses (torchrun, bundles) keep their own setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """A small synthetic dataset (``python -m cxrdoll synth`` output; layout in docs/FORMATS.md).

    48 studies at 64 px, seed 0, with 8 organ and 8 lesion images; generated once per session.
    """
    from cxrdoll.data.synth.writer import SynthConfig, write_synthetic

    out = tmp_path_factory.mktemp("synth_small")
    write_synthetic(SynthConfig(n=48, size=64, seed=0, lateral_frac=0.15, valid_frac=0.2, n_organs=8, n_lesions=8), out)
    return out


@pytest.fixture
def hold_folder():
    """``hold_folder(path)``: another process takes ``path``'s run lock (as a second copy of a job
    would hold it) and keeps it until the test ends; returns that process's id."""
    import subprocess
    import sys

    holders = []

    def hold(folder: Path) -> int:
        holder = subprocess.Popen([sys.executable, "-c", "import time; from cxrdoll.io import lock_folder; "
                                   f"lock_folder({str(folder)!r}, 'x'); print('held', flush=True); time.sleep(120)"],
                                  stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline() == "held\n"
        return holder.pid

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()
