"""After each validation: write ``metrics.json`` and keep the best model by mean AUROC."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Mapping

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import nn

from cxrdoll.engines.auroc import MaskedAUROC
from cxrdoll.engines.checkpoint import unwrap_module
from cxrdoll.io import as_json, read_json, save_torch_atomic, without_nan, write_json_atomic


class ValidationRecorder:
    """Ignite handler for the evaluator.

    Writes ``metrics_file`` atomically after every validation (last, best and the whole history),
    and, when ``model_file`` is given, saves the network's ``state_dict`` there whenever the mean
    AUROC improves. Its state (best so far, history) goes into the resume checkpoint through
    ``state_dict``/``load_state_dict`` (and validations after the last checkpoint are read back from
    ``metrics_file``), so a resumed run never overwrites a better model.
    ``run`` (e.g. network name and image size) is written beside the metrics, so a registry built
    from the folder later reads how the model was trained instead of trusting a command line.
    Only rank 0 writes files.
    """

    def __init__(
        self,
        metric: MaskedAUROC,
        metrics_file: str | Path,
        network: nn.Module | None = None,
        model_file: str | Path | None = None,
        run: Mapping[str, Any] | None = None,
    ) -> None:
        if (network is None) != (model_file is None):
            raise ValueError("network and model_file go together: give both to keep the best model, or neither")
        self.metric = metric
        self.metrics_file = Path(metrics_file)
        self.network = network
        self.model_file = None if model_file is None else Path(model_file)
        self.run = dict(run or {})
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.run_id = uuid.uuid4().hex  # which run wrote the metrics file; a resume keeps its checkpoint's

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: restore_best_metric(e, self.best, "mean_auroc"))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        record = without_nan({  # NaN scores give NaN AUROCs: undefined, never an improvement, no NaN in JSON
            "epoch": int(engine.state.epoch),
            "mean_auroc": self.metric.mean,
            "auroc": dict(self.metric.per_observation),
            "num_samples": self.metric.num_samples,
        })
        self.history = with_record(self.history, record)
        improved = improves(record, self.best, "mean_auroc")
        if improved or self.best is None:
            self.best = record
        if idist.get_rank() != 0:
            return
        if improved and self.network is not None:
            save_torch_atomic(self.model_file, model_state_dict(self.network))
        write_json_atomic(self.metrics_file, self.summary())

    def summary(self) -> dict[str, Any]:
        return {
            "observations": list(self.metric.observations),
            "mean_over": list(self.metric.mean_over),
            "best": self.best,
            "last": self.history[-1] if self.history else None,
            "history": self.history,
            "model": None if self.model_file is None else str(self.model_file),
            "run": self.run,
            "run_id": self.run_id,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best, "run": self.run, "run_id": self.run_id}

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Refuse a resume under other settings; ``ResumableCheckpoint`` asks before loading the
        network, whose mismatch (another architecture) would name only keys."""
        refuse_other_settings(state.get("run") or {}, self.run)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the history (with any validations only ``metrics.json`` holds, see
        :func:`later_validations`); a run resumed under other settings is refused."""
        self.check_resumable(state)
        self.history = list(state["history"])
        self.best = state["best"]
        self.run_id = state.get("run_id") or self.run_id
        later = later_validations(self.metrics_file, self.history, state.get("run_id"))
        if later is not None:
            self.history, self.best = later["history"], later["best"]


def refuse_other_settings(stored: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """A run resumed under other settings (say, image size) is refused: its best model and its
    records would then describe neither run. Keys only one side has are not compared, nor a path
    whose file's sha256 both sides record (``<key>_sha256``).
    ``ResumableCheckpoint`` adds the file and how to go on."""
    stored, current = as_json(dict(stored)), as_json(dict(current))
    shared = stored.keys() & current.keys()
    # a file both sides also identify by content (``<key>_sha256``) may be named by another path
    # (relative, moved): the content decides
    compared = sorted(k for k in shared if f"{k}_sha256" not in shared)
    differ = {k: (stored[k], current[k]) for k in compared if stored[k] != current[k]}
    if differ:
        raise ValueError("the resume checkpoint was trained with "
                         + ", ".join(f"{k}={old!r}, not {new!r}" for k, (old, new) in differ.items()))


def with_record(history: list[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
    """``history`` ending with ``record``, which replaces the records of its epoch and later ones.

    A resumed run re-runs the epochs after its checkpoint, whose validations (a time-budget stop's,
    or one just before a kill) :func:`later_validations` read back: each epoch is recorded once, as
    last run. ``best`` is kept apart from it and may still be a replaced record: the model file it
    saved is the one on disk.
    """
    return [r for r in history if r["epoch"] < record["epoch"]] + [record]


def improves(record: dict[str, Any], best: dict[str, Any] | None, key: str) -> bool:
    """Whether ``record`` beats ``best`` on ``key`` (higher is better): an undefined score never
    improves, and any defined one beats a missing or undefined best."""
    value = record[key]
    return value is not None and (best is None or best[key] is None or value > best[key])


def later_validations(path: Path, history: list[dict[str, Any]], run_id: str | None) -> dict[str, Any] | None:
    """The record file, when the run ``run_id`` wrote it with validations after the checkpoint's
    ``history``; else None.

    The file is rewritten after every validation, the checkpoint once an epoch: the validation a
    wall-clock budget runs when it stops mid-epoch, or one just before a kill, is only in the file,
    and the model file it saved may be better than the checkpoint's best, which a resumed run would
    then overwrite. Only the same run's file counts (a file left by an earlier run in the folder,
    with the same settings, is not this one's history); a checkpoint from before run ids has none.
    """
    if run_id is None or not path.is_file():
        return None
    try:
        doc = read_json(path)
    except ValueError:  # unreadable: the checkpoint's own record stands
        return None
    if not isinstance(doc, dict) or doc.get("run_id") != run_id or not isinstance(doc.get("history"), list):
        return None
    on_disk, known = doc["history"], as_json(history)
    return doc if len(on_disk) > len(known) and on_disk[: len(known)] == known else None


def restore_best_metric(engine: Engine, best: dict[str, Any] | None, key: str) -> None:
    """Give a resumed evaluator the best key-metric value and epoch recorded before the resume.

    MONAI keeps them in the engine's state, which no checkpoint holds: after a resume its log would
    call the best of the new epochs the best, while the saved model rightly stays the earlier one.
    """
    if best is not None and best.get(key) is not None and getattr(engine.state, "best_metric_epoch", None) == -1:
        engine.state.best_metric, engine.state.best_metric_epoch = best[key], best["epoch"]


def model_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """CPU ``state_dict`` of the plain network, loadable by ``build_classifier(arch)``."""
    return {k: v.detach().cpu() for k, v in unwrap_module(network).state_dict().items()}


# where a training bundle records its run settings beside the model it writes: (file, key in it)
RUN_RECORDS: tuple[tuple[str, str | None], ...] = (
    ("metrics.json", "run"),  # cxr_classifier (ValidationRecorder)
    ("validation_history.json", None),  # segmentation bundles (SegmentationRecorder's info, top level)
)


def trained_setting(checkpoint: str | os.PathLike | None, key: str, default: Any) -> Any:
    """``key`` as the training bundle recorded it beside ``checkpoint``, else ``default`` (also when
    no checkpoint is given).

    The inference and evaluation configs take their network and image-size defaults from it, so a
    model trained at 224 px is not silently run at 320 px, nor its masks given the wrong class names;
    a training bundle started from a checkpoint takes its network from it the same way.
    """
    if not checkpoint:
        return default
    for name, section in RUN_RECORDS:
        record = Path(checkpoint).with_name(name)
        if record.is_file():
            doc = read_json(record)
            run = doc.get(section) if isinstance(doc, dict) and section else doc
            if isinstance(run, dict) and key in run:
                return run[key]
    return default


def evaluation_classes(datalist: str | os.PathLike, checkpoint: str | os.PathLike | None) -> list[str]:
    """The datalist's class names, refused when the model beside ``checkpoint`` was trained on others.

    Masks are matched to output channels by position: a datalist listing the same structures in
    another order would score each channel against another structure's masks.
    """
    from cxrdoll.data.segmentation import datalist_classes

    classes = datalist_classes(datalist)
    trained = trained_setting(checkpoint, "class_names", None)
    if trained is not None and list(trained) != classes:
        raise ValueError(f"{datalist}: classes {classes} are not the {list(trained)} (in this order) that the model "
                         f"{checkpoint} was trained on")
    return classes
