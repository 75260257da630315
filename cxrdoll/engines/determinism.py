"""Seeding for the bundles' runs, with cuDNN autotuning as an opt-in.

MONAI's ``set_determinism`` (what the model-zoo bundles call) seeds Python, NumPy and torch and
also pins cuDNN to deterministic kernels with autotuning off, so that two GPU runs agree bit for
bit. Fixed-size CXR training is the case autotuning is made for; ``cudnn_benchmark`` lets a run
keep the seeds and trade that bitwise agreement for cuDNN's fastest kernels. On a CPU it changes
nothing.
"""

from __future__ import annotations

import torch
from monai.utils import set_determinism


def seed_run(seed: int, cudnn_benchmark: bool = False) -> None:
    """Seed every generator as ``set_determinism(seed)`` does; with ``cudnn_benchmark``, let cuDNN autotune."""
    set_determinism(seed=seed)
    if cudnn_benchmark:
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
