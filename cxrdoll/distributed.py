"""Process groups of a multi-process run: joining the launcher's, freeing it safely at exit, and a CPU
(gloo) group beside it for collectives that must not involve the GPU.

Under torchrun on GPUs the default group is NCCL: a collective there runs on the device, and reading
its result back (``.item()``) waits for every kernel queued before it. A handler that agrees on a
host value each iteration (the wall-clock budget) would stall the GPU twice per step. Waits longer
than NCCL's timeout (other ranks waiting out rank 0's image-cache build) also belong here.
"""

from __future__ import annotations

import atexit
import gc
from datetime import timedelta
from typing import Any

import torch

# The group's timeout: the longest a rank waits for another, e.g. for rank 0's image-cache build. A
# timeout costs little there (the build resumes), and a rank that dies ends its side of the group
# (gloo: "Connection closed by peer"), so no rank waits it out when another fails.
HOST_WAIT = timedelta(hours=24)

_HOST_GROUP: tuple[Any, Any] | None = None  # (the default group it was made under, the gloo group)
_RELEASE_REGISTERED = False


def init_process_group(backend: str) -> None:
    """Join the launcher's process group (unless already joined) and have it freed at exit while the
    interpreter still runs (:func:`_release_at_exit`)."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    _register_release()


def host_group() -> Any:
    """The gloo group of all ranks: made once per default group, by every rank at its first use (a
    collective call: every rank must reach it), and left for ``destroy_process_group()`` to end.
    Made and destroyed for each use, a 2-process run once aborted one rank ("terminate called
    without an active exception") right after its second image cache."""
    global _HOST_GROUP
    world = torch.distributed.group.WORLD
    if _HOST_GROUP is None or _HOST_GROUP[0] is not world:
        _register_release()
        _HOST_GROUP = (world, torch.distributed.new_group(backend="gloo", timeout=HOST_WAIT))
    return _HOST_GROUP[1]


def _register_release() -> None:
    global _RELEASE_REGISTERED
    if not _RELEASE_REGISTERED:
        atexit.register(_release_at_exit)
        _RELEASE_REGISTERED = True


def _release_at_exit() -> None:
    """Free process groups before interpreter finalization. ``destroy_process_group()`` only unregisters
    them: the DDP wrapper (inside the workflow's reference cycles) and this module still hold them, and
    freed in finalization's last collection, where other threads may no longer take the GIL, a gloo
    group's teardown aborted a finished rank now and then ("terminate called without an active
    exception", exit -6). An ``atexit`` handler runs before finalization starts."""
    global _HOST_GROUP
    _HOST_GROUP = None
    gc.collect()


def broadcast_float(value: float, src: int = 0) -> float:
    """``src``'s ``value`` on every rank, through the host group (no GPU work, no device sync)."""
    tensor = torch.tensor([value], dtype=torch.float64)
    torch.distributed.broadcast(tensor, src=src, group=host_group())
    return float(tensor.item())
