"""The shared timing loops of the benchmark scripts: they time exactly what they say they time."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from benchmarks.common import (
    DeviceTimeline, OpCounter, busy_and_span, cpu_model, cudnn_flags, device_name, loader_rate, time_steps, time_trainer, within_events,
)

CPU = torch.device("cpu")


class _Trainer(Engine):
    """An Ignite engine whose ``run()`` takes no arguments, as MONAI's trainers' does."""

    def __init__(self, items: int, epochs: int) -> None:
        super().__init__(lambda engine, batch: batch)
        self._items, self._epochs = items, epochs

    def run(self):  # type: ignore[override]
        return super().run(range(self._items), max_epochs=self._epochs)


def test_time_steps_runs_warmup_then_timed_iterations():
    calls = []
    seconds = time_steps(lambda: calls.append(1), warmup=2, iterations=5, device=CPU)
    assert len(calls) == 7
    assert seconds >= 0.0


def test_time_trainer_stops_after_warmup_plus_iterations():
    trainer = _Trainer(items=100, epochs=3)
    seconds = time_trainer(trainer, warmup=2, iterations=4, device=CPU)
    assert trainer.state.iteration == 6
    assert seconds >= 0.0


def test_time_trainer_names_a_too_short_run():
    trainer = _Trainer(items=3, epochs=1)
    with pytest.raises(RuntimeError, match="fewer than 6 iterations"):
        time_trainer(trainer, warmup=2, iterations=4, device=CPU)


def test_time_trainer_needs_a_warmup_iteration():
    with pytest.raises(ValueError, match="warm-up"):
        time_trainer(_Trainer(items=10, epochs=1), warmup=0, iterations=4, device=CPU)


def test_cudnn_flags_record_what_a_bundles_initialize_leaves_behind(monkeypatch):
    from cxrdoll.engines.determinism import seed_run

    for name in ("deterministic", "benchmark"):  # restored after the test, like every global flag set here
        monkeypatch.setattr(torch.backends.cudnn, name, getattr(torch.backends.cudnn, name))
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    assert cudnn_flags() == {"deterministic": False, "benchmark": True}
    seed_run(0)  # what every training bundle's ``initialize`` runs, by default
    assert cudnn_flags() == {"deterministic": True, "benchmark": False}
    seed_run(0, True)  # --cudnn_benchmark true
    assert cudnn_flags() == {"deterministic": False, "benchmark": True}


def test_cpu_device_name_reports_model_threads_and_load():
    name = device_name(CPU)
    assert f"{torch.get_num_threads()} torch threads" in name and "load" in name
    assert cpu_model() in name and "AVX-512" in cpu_model()  # the CPUs of development machines differ in it


def test_loader_rate_counts_images_after_the_warmup(monkeypatch):
    from types import SimpleNamespace

    import benchmarks.common

    clock = iter([10.0, 12.0])  # start and end of the timed batches: 2 s
    monkeypatch.setattr(benchmarks.common, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    batches = [{"image": torch.zeros(n, 1, 2, 2)} for n in (100, 3, 3, 3, 100)]
    assert loader_rate(batches, warmup=1, batches=3) == 9 / 2.0  # the warm-up and the 5th batch are not counted


def test_op_counter_counts_forward_and_backward_inside_its_block_only():
    x = torch.rand(3, requires_grad=True)
    with OpCounter() as counter:
        (x * 2).sum().backward()
    assert counter.ops["aten.mul"] >= 2 and counter.ops["aten.sum"] == 1  # forward mul, backward mul by 2
    before = counter.total
    (x * 3).sum()
    assert counter.total == before > 0


@pytest.mark.parametrize("intervals, busy, span", [
    ([], 0.0, 0.0),
    ([(0, 2), (5, 6)], 3.0, 6.0),             # a gap of 3 is idle
    ([(0, 4), (1, 2), (3, 6)], 6.0, 6.0),     # nested and overlapping kernels count once
    ([(5, 6), (0, 2), (1, 3)], 4.0, 6.0),     # order does not matter
    ([(0, 10), (2, 3), (4, 5)], 10.0, 10.0),  # a long interval covering later short ones
])
def test_busy_and_span_takes_the_union_of_overlapping_intervals(intervals, busy, span):
    assert busy_and_span(intervals) == (busy, span)


def test_device_timeline_on_cpu_measures_its_window_per_iteration(tmp_path):
    a = torch.rand(256, 256)
    with DeviceTimeline(CPU, trace=tmp_path / "t" / "trace.json.gz") as timeline:
        for _ in range(4):
            a = (a @ a).tanh()
    summary = timeline.summary(iterations=4)
    assert 0 < summary["busy_ms_per_iteration"] <= summary["span_ms_per_iteration"]
    assert 0 < summary["busy_fraction"] <= 1
    assert (tmp_path / "t" / "trace.json.gz").stat().st_size > 0


def test_device_timeline_reports_an_empty_window_or_a_failed_profiler_instead_of_failing_the_run(monkeypatch):
    with DeviceTimeline(CPU) as timeline:
        pass
    assert timeline.summary(iterations=1) == {"error": "the profiler saw no cpu work in its window"}

    broken = DeviceTimeline(CPU)
    monkeypatch.setattr(broken._profiler, "__enter__", lambda: (_ for _ in ()).throw(RuntimeError("CUPTI missing")))
    with broken:
        torch.ones(3).sum()
    assert broken.summary(iterations=1) == {"error": "profiler did not start: RuntimeError: CUPTI missing"}


def test_device_timeline_reports_a_profiler_that_fails_to_stop(monkeypatch, tmp_path):
    timeline = DeviceTimeline(CPU, trace=tmp_path / "trace.json.gz")
    with timeline:
        monkeypatch.setattr(timeline._profiler, "export_chrome_trace", lambda path: (_ for _ in ()).throw(OSError("disk full")))
        torch.ones(3).sum()
    assert timeline.summary(iterations=1) == {"error": "profiler failed: OSError: disk full"}


def test_within_events_spans_the_iterations_it_is_given():
    seen = []

    class Window:
        def __enter__(self):
            seen.append("enter")

        def __exit__(self, *exc):
            seen.append("exit")

    trainer = _Trainer(items=10, epochs=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    within_events(trainer, Events.ITERATION_COMPLETED(once=2), Events.ITERATION_COMPLETED(once=4), Window())
    trainer.run()
    assert seen[:7] == [1, 2, "enter", 3, 4, "exit", 5]
