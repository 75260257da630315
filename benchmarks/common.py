"""What the timing benchmarks share: device naming, CUDA sync, and timed loops.

Every rate is measured the same way: warm-up iterations first (cuDNN autotune, compile), then a
clock from the end of the warm-up to the end of the last timed iteration, synchronised on CUDA.
"""

from __future__ import annotations

import os
import platform
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a clock reading covers it; no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX-512 (development machines differ in that).

    Falls back to the machine type where ``/proc/cpuinfo`` is unavailable.
    """
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    name = names[0] if names else platform.machine()
    return f"{name}, {'with' if ' avx512f' in info else 'no'} AVX-512"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU with its model, torch thread count and current 1-min load average."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"CPU ({cpu_model()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, 1-min load {os.getloadavg()[0]:.2f})")


class OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched inside ``with counter:``, backward included.

    On a GPU nearly every one is a kernel launch, so two loops doing the same maths should
    dispatch the same number: the excess is host work the device may wait for. Counting routes
    every operator through Python, so never count inside a timed region.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def time_steps(step: Callable[[], Any], warmup: int, iterations: int, device: torch.device) -> float:
    """Seconds for ``iterations`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync(device)
    return time.perf_counter() - start


def time_trainer(trainer: Any, warmup: int, iterations: int, device: torch.device) -> float:
    """Seconds an Ignite ``trainer`` takes for ``iterations`` iterations after ``warmup``; stops it there."""
    from ignite.engine import Events

    if warmup < 1:
        raise ValueError("time_trainer needs at least one warm-up iteration to start its clock")
    total = warmup + iterations
    marks: dict[int, float] = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _mark(engine: Any) -> None:
        if engine.state.iteration in (warmup, total):
            sync(device)
            marks[engine.state.iteration] = time.perf_counter()
        if engine.state.iteration == total:
            engine.terminate()

    trainer.run()
    if total not in marks:
        raise RuntimeError(f"the trainer stopped after fewer than {total} iterations: give it more data")
    return marks[total] - marks[warmup]


def loader_rate(loader: Any, warmup: int, batches: int) -> float:
    """Images/s the DataLoader alone delivers after ``warmup`` batches: the pipeline's data ceiling.

    Timed on fresh workers over ``batches`` batches, so the prefetch queue filled during the warm-up
    covers at most ``2 * num_workers`` of them; compare with the trainer's rate to see which bounds it.
    """
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    images = sum(len(next(it)["image"]) for _ in range(batches))
    return images / (time.perf_counter() - start)


def run_parallel(jobs: Sequence[Callable[[], Any]]) -> None:
    """Run ``jobs`` on a thread per core and re-raise the first failure (file encodes: zlib releases the GIL)."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()
