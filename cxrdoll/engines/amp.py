"""Mixed precision in MONAI's trainers: the bundles' ``amp_dtype`` option, and a gradient scaler
only where the dtype needs one."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Events

from cxrdoll.explain.common import autocast_dtype


class GradScalerOnlyForFloat16:
    """Train handler: give a bfloat16 trainer a disabled (pass-through) gradient scaler.

    MONAI's ``SupervisedTrainer`` builds a ``GradScaler`` whenever ``amp`` is on. bfloat16 has
    float32's exponent range, so its gradients need no loss scaling; the scaler's inf check still
    reads a flag back from the GPU before every optimiser step, a synchronisation that leaves the
    device idle while the host catches up. float16 (MONAI's default autocast dtype) keeps its scaler.

    The swap happens when the run starts: ``Trainer.run`` builds the scaler then, after every
    handler is attached, so a swap at ``attach`` would be overwritten. Attach this handler before
    ``ResumableCheckpoint``, which registers whichever scaler the run starts with.
    """

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self.swap)

    @staticmethod
    def swap(engine: Any) -> None:
        dtype = getattr(engine, "amp_kwargs", {}).get("dtype", torch.float16)
        if getattr(engine, "scaler", None) is not None and dtype != torch.float16:
            engine.scaler = torch.amp.GradScaler("cuda", enabled=False)


def amp_dtype(name: str) -> torch.dtype:
    """The bundles' ``amp_dtype`` as a torch dtype: bfloat16 or float16 (also bf16/fp16/half).

    float32 is not an autocast dtype: train in float32 with ``--amp false``.
    """
    dtype = autocast_dtype(name)
    if dtype is None:
        raise ValueError(f"amp_dtype {name!r} is not a reduced precision: use bfloat16 or float16, "
                         "or --amp false to run in float32")
    return dtype
