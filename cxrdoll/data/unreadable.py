"""Batch jobs skip an unreadable image and report it, instead of stopping at it.

An inference run over thousands of clinical images should not lose every prediction to one
corrupt file. The loader's item for such a file is a placeholder of the right shape, so batches
keep their shape; it carries the reason in ``load_error`` ("" for a good item). Writers leave those
items out and ``UnreadableReport`` lists them. The reason travels as a string because an error raised
in a DataLoader worker reaches the main process as a traceback dump, not as the error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Mapping, Protocol, Sequence

import ignite.distributed as idist
from ignite.engine import Engine, Events

from cxrdoll.errors import about_file
from cxrdoll.io import write_csv_atomic

ERROR_KEY = "load_error"
REPORT_COLUMNS: tuple[str, ...] = ("id", "reason")


class PlaceholderLoader(Protocol):
    """An image loader that can stand in a same-shaped item for a file it cannot read."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]: ...

    def placeholder(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]: ...


class SkipUnreadable:
    """Wrap ``load``: a file it cannot read (``ValueError``/``OSError``) gives its placeholder plus the reason."""

    def __init__(self, load: PlaceholderLoader, key: str = "image") -> None:
        self.load = load
        self.key = key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        try:
            return {**self.load(data), ERROR_KEY: ""}
        except (ValueError, OSError) as err:
            return {**self.load.placeholder(data), ERROR_KEY: about_file(str(data[self.key]), err)}


def readable(batch: Mapping[str, Any], size: int) -> list[bool]:
    """Per item of a collated batch of ``size`` items: True where its image was read."""
    errors: Sequence[str] = batch.get(ERROR_KEY) or [""] * size
    return [not error for error in errors]


class UnreadableReport:
    """Evaluator handler: log each skipped image and write ``output_file`` (CSV: id, reason) at the end.

    Written on every run, empty but for its header when nothing was skipped, so a report left by an
    earlier run is never mistaken for this one's.
    """

    def __init__(self, output_file: str | Path) -> None:
        self.output_file = Path(output_file)
        self.rows: list[tuple[str, str]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        for image_id, error in zip(batch["id"], batch.get(ERROR_KEY) or []):
            if error:
                engine.logger.warning(f"skipped unreadable image: {error}")
                self.rows.append((str(image_id), error))

    def write(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        write_csv_atomic(self.output_file, REPORT_COLUMNS, self.rows)
        if self.rows:
            engine.logger.warning(f"skipped {len(self.rows)} unreadable image(s); list: {self.output_file}")
