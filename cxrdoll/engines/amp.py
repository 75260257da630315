"""Mixed precision in MONAI's trainers: a gradient scaler only where the dtype needs one."""

from __future__ import annotations

from typing import Any

import torch


class GradScalerOnlyForFloat16:
    """Train handler: give a bfloat16 trainer a disabled (pass-through) gradient scaler.

    MONAI's ``SupervisedTrainer`` builds a ``GradScaler`` whenever ``amp`` is on. bfloat16 has
    float32's exponent range, so its gradients need no loss scaling; the scaler's inf check still
    reads a flag back from the GPU before every optimiser step, a synchronisation that leaves the
    device idle while the host catches up. float16 (MONAI's default autocast dtype) keeps its scaler.
    """

    def attach(self, engine: Any) -> None:
        dtype = getattr(engine, "amp_kwargs", {}).get("dtype", torch.float16)
        if getattr(engine, "scaler", None) is not None and dtype != torch.float16:
            engine.scaler = torch.amp.GradScaler("cuda", enabled=False)
