"""Seeding for the bundles' runs, with cuDNN autotuning as an opt-in.

MONAI's ``set_determinism`` (what the model-zoo bundles call) seeds Python, NumPy and torch and
also pins cuDNN to deterministic kernels with autotuning off. GPU runs then differ only where a
kernel outside cuDNN adds with atomics (adaptive pooling's and bilinear upsampling's backward):
``torch.use_deterministic_algorithms`` is left off. Fixed-size CXR training is the case autotuning
is made for; ``cudnn_benchmark`` lets a run keep the seeds and trade cuDNN's determinism for its
fastest kernels. On a CPU it changes nothing.
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
