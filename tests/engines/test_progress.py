"""The bundles' ``StatsHandler``: a user error is left to the one-line exception hook, a bug keeps its traceback."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from ignite.engine import Engine

from cxrdoll.engines.progress import StatsHandler


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logged_by_failing_run(error: Exception) -> list[logging.LogRecord]:
    """What the handler logs when an engine's step raises ``error`` (which the run re-raises)."""
    def step(engine, batch):
        raise error

    engine = Engine(step)
    handler = StatsHandler(name="cxrdoll.test.stats", iteration_log=False, epoch_log=False)
    handler.attach(engine)
    records = _Records()
    handler.logger.addHandler(records)
    try:
        with pytest.raises(type(error)):
            engine.run([0])
    finally:
        handler.logger.removeHandler(records)
    return records.records


@pytest.mark.parametrize(("error", "logged"), [(ValueError("checkpoint.pt: trained with image_size=64, not 32"), False),
                                               (ZeroDivisionError("a bug"), True)])
def test_only_a_bug_is_logged_with_its_traceback(error, logged, monkeypatch):
    monkeypatch.delenv("CXRDOLL_TRACEBACK", raising=False)
    records = _logged_by_failing_run(error)
    assert bool(records) == logged  # ignite raises it to the handler once per loop it leaves
    assert all(r.exc_info is not None and str(error) in r.getMessage() for r in records)


def test_a_user_error_keeps_its_traceback_when_asked(monkeypatch):
    monkeypatch.setenv("CXRDOLL_TRACEBACK", "1")
    records = _logged_by_failing_run(ValueError("bad datalist"))
    assert records and all(r.exc_info is not None for r in records)


TENSORBOARD_RUN = """
import sys
from ignite.engine import Engine
from cxrdoll.engines.progress import TensorBoardStatsHandler

def step(engine, batch):
    if engine.state.iteration == int(sys.argv[2]):
        raise RuntimeError("diverged")
    return {"loss": float(engine.state.iteration)}

trainer = Engine(step)
TensorBoardStatsHandler(log_dir=sys.argv[1], tag_name="train_loss", output_transform=lambda o: o["loss"]).attach(trainer)
trainer.run(range(5), max_epochs=1)
if sys.argv[3] == "stay":  # an in-process run: the caller reads the logs before this process ends
    print("READ", flush=True)
    sys.stdin.readline()
"""


def _logged_losses(log_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [s.value for s in events.Scalars("train_loss")] if "train_loss" in events.Tags()["scalars"] else []


@pytest.mark.parametrize("crash_at", [0, 4])
def test_tensorboard_keeps_the_training_loss_of_a_short_or_crashed_run(tmp_path, crash_at):
    """SummaryWriter writes every 120 s or at close, and nothing closed it: a run shorter than that
    had no training loss in TensorBoard (only its 88-byte header), a crash lost its last two minutes."""
    script = tmp_path / "run.py"
    script.write_text(TENSORBOARD_RUN)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "logs"), str(crash_at), "exit"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode != 0) == bool(crash_at), done.stderr[-2000:]
    assert _logged_losses(tmp_path / "logs") == ([1.0, 2.0, 3.0] if crash_at else [1.0, 2.0, 3.0, 4.0, 5.0])


def test_tensorboard_has_the_training_loss_when_the_engine_completes(tmp_path):
    """In-process runs (a sweep, the demo's stages) go on after training: its curve is there already."""
    script = tmp_path / "run.py"
    script.write_text(TENSORBOARD_RUN)
    with subprocess.Popen([sys.executable, str(script), str(tmp_path / "logs"), "0", "stay"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as run:
        try:
            assert run.stdout.readline().strip() == "READ"
            assert _logged_losses(tmp_path / "logs") == [1.0, 2.0, 3.0, 4.0, 5.0]
        finally:
            run.communicate("\n", timeout=60)


def test_tensorboard_writer_is_closed_once_its_run_is_freed(tmp_path):
    """An in-process run (each of a sweep's) left its writer open, with its thread and event file,
    until the process ended."""
    import gc

    from ignite.engine import Engine

    from cxrdoll.engines.progress import TensorBoardStatsHandler

    trainer = Engine(lambda engine, batch: {"loss": float(engine.state.iteration)})
    handler = TensorBoardStatsHandler(log_dir=str(tmp_path), tag_name="train_loss", output_transform=lambda o: o["loss"])
    handler.attach(trainer)
    trainer.run(range(3), max_epochs=1)
    writer = handler._writer
    assert writer.all_writers is not None  # open while the run is alive
    del trainer, handler
    gc.collect()
    assert writer.all_writers is None  # SummaryWriter.close's mark
    assert _logged_losses(tmp_path) == [1.0, 2.0, 3.0]
