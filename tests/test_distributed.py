"""cxrdoll.distributed: process groups freed while the interpreter still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CYCLE = """
import sys, torch, torch.distributed as dist
from pathlib import Path
import cxrdoll.distributed

cxrdoll.distributed.init_process_group("gloo")
cxrdoll.distributed.host_group()

class Workflow:  # a reference cycle holding the DDP network, as a bundle's engines and handlers make one
    def __init__(self):
        self.me = self
        self.network = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
    def __del__(self):
        Path(sys.argv[1]).write_text(f"freed while finalizing: {sys.is_finalizing()}")

workflow = Workflow()
workflow.network(torch.ones(1, 2)).sum().backward()
dist.destroy_process_group()  # as the bundles' finalize: it unregisters the group, the cycle still holds it
del workflow
"""


def test_a_ddp_network_in_a_reference_cycle_is_freed_before_interpreter_finalization(tmp_path):
    """Freed in finalization's last collection, where other threads may no longer take the GIL, a gloo
    group's teardown aborted a finished torchrun rank ("terminate called without an active exception")."""
    script, report = tmp_path / "cycle.py", tmp_path / "report.txt"
    script.write_text(CYCLE)
    # Port 0: the one rank's store takes a free port as it binds. A port found free here and bound by the
    # child seconds later (after importing torch) can be taken in between by another process's connection.
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0", "RANK": "0", "WORLD_SIZE": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(script), str(report)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert report.read_text() == "freed while finalizing: False"
