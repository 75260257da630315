"""Seeding for the bundles' runs, with cuDNN autotuning as an opt-in.

MONAI's ``set_determinism`` (what the model-zoo bundles call) seeds Python, NumPy and torch and
also pins cuDNN to deterministic kernels with autotuning off, so that two GPU runs agree bit for
bit. Fixed-size CXR training is the case autotuning is made for; ``cudnn_benchmark`` lets a run
keep the seeds and trade that bitwise agreement for cuDNN's fastest kernels. On a CPU it changes
nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import set_determinism

from cxrdoll.engines.flags import flag


def seed_run(seed: int, cudnn_benchmark: Any = False) -> None:
    """Seed every generator as ``set_determinism(seed)`` does; with ``cudnn_benchmark``, let cuDNN autotune."""
    set_determinism(seed=seed)
    if flag(cudnn_benchmark, "cudnn_benchmark"):
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
