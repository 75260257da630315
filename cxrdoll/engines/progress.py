"""A tqdm progress bar for MONAI trainers, showing the running loss."""

from __future__ import annotations

from ignite.handlers import ProgressBar
from ignite.engine import Engine


class LossProgressBar:
    """Attachable from a bundle config (MONAI handlers take ``attach(engine)`` with no options)."""

    def __init__(self, persist: bool = False) -> None:
        self.bar = ProgressBar(persist=persist)

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=lambda output: {"loss": output["loss"].item()})
