"""Checkpoints of a run: the resumable one, rewritten atomically each epoch, and trained weights to evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from torch.optim.lr_scheduler import CosineAnnealingLR

from cxrdoll.io import lock_folder, save_torch_atomic, unlock_folder
from cxrdoll.networks.checkpoints import check_state_dict, load_checkpoint_file, load_network_weights


class ResumableCheckpoint:
    """Save ``objects`` plus the trainer (and its AMP grad scaler) to ``path`` each epoch.

    With ``resume=True`` and ``path`` present, everything is restored when the trainer starts,
    so the run continues at the next epoch. The trainer is added at ``attach`` time, which keeps
    bundle configs free of a handler -> trainer -> handler cycle; the grad scaler when the run
    starts, since MONAI's ``Trainer.run`` only builds it then (a checkpoint from before a scaler
    was saved resumes with a fresh one). Files load with ``torch.load(..., weights_only=True)``.

    ``outputs`` are the files a run leaves (its record, its best model): a run that does not resume
    refuses to start where another run left them, since its first validation would overwrite them.
    """

    def __init__(self, path: str | Path, objects: Mapping[str, Any], resume: bool = True, interval: int = 1,
                 outputs: Sequence[str | Path] = ()) -> None:
        if interval < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {interval}")
        self.path = Path(path)
        self.objects = dict(objects)
        self.resume = resume
        self.interval = interval
        self.outputs = [Path(p) for p in outputs]
        # how to train afresh instead: where outputs are guarded, --resume false would be refused
        self.start_over = ("start over in a new or empty output_dir" if self.outputs
                           else "start over in a new output_dir or with --resume false")

    def attach(self, engine: Engine) -> None:
        self.objects["trainer"] = engine
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)
        engine.add_event_handler(Events.COMPLETED, lambda _: unlock_folder(self.path.parent))

    def load(self, engine: Engine) -> None:
        if idist.get_rank() == 0:  # the rank that writes; held until the run completes (or its process ends)
            lock_folder(self.path.parent, "training run")
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            self.objects["scaler"] = scaler
        if not (self.resume and self.path.is_file()):
            self.refuse_to_overwrite()
            return
        state = load_checkpoint_file(self.path)
        missing = sorted(set(self.objects) - set(state) - {"scaler"})
        if missing:
            raise KeyError(f"{self.path}: resume checkpoint lacks {missing}")
        for name, obj in self.objects.items():  # recorded settings first: they name the one that changed
            if name in state and hasattr(obj, "check_resumable"):
                try:
                    obj.check_resumable(state[name])
                except ValueError as err:
                    raise ValueError(f"{self.path}: {err}: resume with its settings, or {self.start_over}") from None
        for name, obj in self.objects.items():  # another architecture: one line, not every key
            module = unwrap_module(obj)
            if isinstance(module, torch.nn.Module):
                try:
                    check_state_dict(f"{self.path} [{name}]", module.state_dict(), state[name])
                except ValueError as err:
                    raise ValueError(f"{err}. Resume with the settings that wrote it, or {self.start_over}") from None
        max_epochs = engine.state.max_epochs
        horizons = {name: obj.T_max for name, obj in self.objects.items() if isinstance(obj, CosineAnnealingLR)}
        to_load = {k: v for k, v in self.objects.items() if k in state}
        if "scaler" in to_load and not state["scaler"] and to_load["scaler"].is_enabled():
            # The run that saved it did not scale (bf16, or no CUDA): an fp16 resume starts a fresh scaler,
            # which loading that empty state into would refuse.
            del to_load["scaler"]
            engine.logger.info(f"{self.path}: saved without gradient scaling; fp16 starts a fresh gradient scaler")
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=state)
        except ValueError as err:  # a recorder refusing other settings: name the file its record came from
            raise ValueError(f"{self.path}: {err}: resume with its settings, or {self.start_over}") from None
        for name, t_max in horizons.items():
            stretch_cosine(self.objects[name], t_max, engine.logger)
        # The command line decides how long to train; the checkpoint only says where we are.
        if engine.state.epoch > max_epochs:
            raise ValueError(
                f"{self.path}: checkpoint is at epoch {engine.state.epoch}, beyond max_epochs={max_epochs}"
            )
        engine.state.max_epochs = max_epochs
        message = f"resumed from {self.path} at epoch {engine.state.epoch}"
        if engine.state.epoch == max_epochs:
            message += ("; max_epochs reached, nothing left to train (raise --max_epochs to train longer, or "
                        f"{self.start_over})")
        engine.logger.info(message)

    def refuse_to_overwrite(self) -> None:
        """Refuse a run that does not resume where another run left ``outputs``: a finished model and
        its record would be lost at the first validation."""
        found = [p for p in self.outputs if p.exists()]
        if not found:
            return
        how = "resume it with --resume true" if self.path.is_file() else f"it left no {self.path.name} to resume from"
        raise ValueError(f"{found[0].parent}: holds another run's {' and '.join(p.name for p in found)}, which "
                         f"this run would overwrite: {how}, or use a new or empty output_dir")

    def save(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        state = {name: unwrap_module(obj).state_dict() for name, obj in self.objects.items()}
        save_torch_atomic(self.path, state)


class WeightsLoader:
    """Evaluator handler: load the trained network's weights when the run starts.

    Used where MONAI's ``CheckpointLoader`` would be: a checkpoint of another architecture then
    fails in one line naming the file and the model, not with every mismatched key.
    """

    def __init__(self, path: str | Path, network: torch.nn.Module, model_name: str = "") -> None:
        self.path = Path(path)
        self.network = network
        self.model_name = model_name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)

    def load(self, engine: Engine) -> None:
        load_network_weights(unwrap_module(self.network), self.path, self.model_name)
        engine.logger.info(f"loaded weights from {self.path}")


def stretch_cosine(scheduler: CosineAnnealingLR, t_max: int, logger: Any) -> None:
    """Give a restored cosine schedule the command line's horizon, rates as if it had been there from the start.

    The checkpoint restores the horizon of the run that wrote it: resumed with a higher
    ``max_epochs``, the old cosine would sit at zero and then climb back up.
    """
    if scheduler.T_max == t_max:
        return
    logger.info(f"cosine learning-rate schedule stretched from {scheduler.T_max} to {t_max} epochs")
    scheduler.T_max = t_max
    rates = scheduler._get_closed_form_lr()
    for group, rate in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = list(rates)


def unwrap_module(obj: Any) -> Any:
    """Save the plain module under DDP / torch.compile so checkpoints move between set-ups."""
    while hasattr(obj, "module") or hasattr(obj, "_orig_mod"):
        obj = obj.module if hasattr(obj, "module") else obj._orig_mod  # not `or`: a compiled module's len() raises
    return obj
