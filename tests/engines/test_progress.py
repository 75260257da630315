"""The bundles' ``StatsHandler``: a user error is left to the one-line exception hook, a bug keeps its traceback."""

from __future__ import annotations

import logging

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
