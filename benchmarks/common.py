"""What the timing benchmarks share: device naming, CUDA sync, timed loops, and what a loop does.

Every rate is measured the same way: warm-up iterations first (cuDNN autotune, compile), then a
clock from the end of the warm-up to the end of the last timed iteration, synchronised on CUDA.
Where a rate falls short, two views outside the timing say why: the operators an iteration
dispatches (``OpCounter``) and how busy the device stayed across a few iterations (``DeviceTimeline``).
"""

from __future__ import annotations

import os
import platform
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Sequence

import torch
from torch.autograd import DeviceType
from torch.utils._python_dispatch import TorchDispatchMode

# The project's shared test radiographs (CR/DX DICOM), beside the checkout.
SHARED_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"


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


def cudnn_flags() -> dict[str, bool]:
    """cuDNN's algorithm choice, to record beside a rate. A bundle's ``initialize``
    (``cxrdoll.engines.determinism.seed_run``) sets them process-wide, deterministic with autotuning
    off unless ``cudnn_benchmark`` is on, so a bare step timed after a bundle pipeline in the same
    process runs under the same flags."""
    return {"deterministic": bool(torch.backends.cudnn.deterministic), "benchmark": bool(torch.backends.cudnn.benchmark)}


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


def busy_and_span(intervals: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """Length of the union of ``(start, end)`` intervals, and from the first start to the last end."""
    busy, span_start, span_end, cover_end = 0.0, None, None, None
    for start, end in sorted(intervals):
        if span_start is None:
            span_start, cover_end = start, start
        if end > cover_end:
            busy += end - max(start, cover_end)
            cover_end = end
        span_end = end if span_end is None else max(span_end, end)
    return busy, (0.0 if span_start is None else span_end - span_start)


class DeviceTimeline:
    """How busy the device stayed across the work done inside ``with timeline:`` (torch.profiler).

    On CUDA, busy time is the union of the kernels, copies and memsets that ran (not the
    annotation ranges of ``record_function`` blocks, which cover the gaps between them); the rest of the
    span, first to last, is time the GPU waited for the host. Profiled the same way, the bare step
    and the pipeline then tell host-bound idle time (a lower busy fraction) from extra or slower
    device work (more busy milliseconds per iteration). On a CPU, busy time is the union of ATen
    operators, data loading on the main thread included: a check of the code path, not a diagnosis.
    ``trace`` also writes a Chrome trace there (``.json.gz``) to open in Perfetto.

    A diagnostic must not cost the measurement it explains: a profiler that fails (no CUPTI, say)
    leaves the run going and its summary says why instead of giving figures.
    """

    def __init__(self, device: torch.device, trace: Path | None = None) -> None:
        self.device, self.trace = device, trace
        self.error: str | None = None
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._profiler = torch.profiler.profile(activities=activities)

    def __enter__(self) -> "DeviceTimeline":
        try:
            self._profiler.__enter__()
        except Exception as err:  # whatever the profiler raises, the timed run goes on
            self.error = f"profiler did not start: {type(err).__name__}: {err}"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.error is not None:
            return
        sync(self.device)
        try:
            self._profiler.__exit__(*exc)
            if self.trace is not None:
                self.trace.parent.mkdir(parents=True, exist_ok=True)
                self._profiler.export_chrome_trace(str(self.trace))
        except Exception as err:  # as in __enter__
            self.error = f"profiler failed: {type(err).__name__}: {err}"

    def summary(self, iterations: int) -> dict[str, Any]:
        """Busy and span milliseconds per iteration and their ratio over ``iterations``; else ``{"error": why}``."""
        if self.error is not None:
            return {"error": self.error}
        if self.device.type == "cuda":  # not the GPU ranges of record_function blocks: they span the gaps too
            events = [e for e in self._profiler.events()
                      if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
        else:
            events = [e for e in self._profiler.events()
                      if e.device_type == DeviceType.CPU and e.name.startswith("aten::")]
        busy, span = busy_and_span((e.time_range.start, e.time_range.end) for e in events)
        if span <= 0:
            return {"error": f"the profiler saw no {self.device.type} work in its window"}
        return {"busy_ms_per_iteration": round(busy / 1e3 / iterations, 3),
                "span_ms_per_iteration": round(span / 1e3 / iterations, 3),
                "busy_fraction": round(busy / span, 3)}


def within_events(engine: Any, enter: Any, leave: Any, context: ContextManager) -> None:
    """Enter ``context`` when the Ignite ``engine`` fires event ``enter``, leave it at event ``leave``.

    Handlers run in the order they were added: attach before any handler that should find the
    context already left (a clock that starts at the same event).
    """
    engine.add_event_handler(enter, lambda _: context.__enter__())
    engine.add_event_handler(leave, lambda _: context.__exit__(None, None, None))


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
