"""Segmentation training pieces: masked multi-label BCE + Dice, per-class Dice/IoU/HD95, Dice history.

Targets follow the classifier engine's convention: one float tensor ``(B, C, H, W)`` holds 0/1 where
a pixel counts and NaN where it is ignored. A DoLL channel whose state is -1 is NaN throughout
(masked out of loss and metrics); a channel whose state is 0 is all zeros (an empty target). Pixels
marked "ignore" in a downstream set (devices in the lung masks) are NaN in every channel.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from torch import nn

from cxrdoll.engines.auroc import _as_batch, _gather
from cxrdoll.io import save_torch_atomic, write_json_atomic


class MaskedBCEDiceLoss(nn.Module):
    """``bce_weight`` * BCE over counted pixels + ``dice_weight`` * soft Dice loss per (image, channel).

    BCE is the mean over every counted element of the batch: it is what teaches an empty target
    (a negative observation) to stay empty. The Dice term is
    ``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` over the counted pixels of one image's
    channel, averaged over the (image, channel) pairs whose target has a positive pixel. With
    ``dice_on_empty`` the pairs with an empty target count too (their Dice loss is
    ``sum(p) / (sum(p) + smooth)``, which punishes any positive pixel almost fully): with 14 DoLL
    channels of which about 12 are empty, that term was measured to collapse pre-training to empty
    predictions (validation Dice 0.095 after one epoch, 0.018 after six), so it is off by default.
    Computed in float32 so AMP sums over 320² pixels do not overflow.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0,
                 dice_on_empty: bool = False) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got bce={bce_weight}, dice={dice_weight}")
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.dice_on_empty = dice_on_empty

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        logits = logits.float()
        counted = ~torch.isnan(target)
        weight = counted.float()
        t = torch.nan_to_num(target.float(), nan=0.0)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
        bce = (bce * weight).sum() / weight.sum().clamp(min=1)
        dims = tuple(range(2, logits.ndim))
        p = torch.sigmoid(logits) * weight
        dice = 1 - (2 * (p * t).sum(dims) + self.smooth) / (p.sum(dims) + t.sum(dims) + self.smooth)
        in_dice = (counted.flatten(2).any(-1) if self.dice_on_empty else (t * weight).flatten(2).sum(-1) > 0).float()
        # A weighted mean rather than dice[in_dice]: no data-dependent shape, so no wait for the GPU.
        # No pair in the Dice term gives a zero that keeps the graph connected (like the classifier loss).
        dice = (dice * in_dice).sum() / in_dice.sum().clamp(min=1)
        return self.bce_weight * bce + self.dice_weight * dice


def per_image_scores(
    pred: torch.Tensor, target: torch.Tensor, ignore_empty: bool = True, hd95: bool = True
) -> dict[str, torch.Tensor]:
    """Dice, IoU and HD95 (pixels) per (image, channel) of binary ``pred`` against a NaN-masked ``target``.

    Ignored pixels are cleared in both, so they count as neither hit nor miss; a channel with no
    counted pixel scores NaN. With ``ignore_empty`` an empty target scores NaN (MONAI's default),
    otherwise 1 when the prediction is empty too and 0 when not. HD95 is NaN unless both the
    prediction and the target are non-empty; beside it, ``missed`` is 1 where the target has the
    structure and the prediction is empty (HD95 leaves those out, so a model missing a structure
    would look better by HD95 alone), 0 where both have it, NaN where the target is empty.
    Returns float32 tensors ``(B, C)`` on the CPU.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, C, H, W)")
    counted = ~torch.isnan(target)
    t = (torch.nan_to_num(target.float(), nan=0.0) > 0.5) & counted
    p = (pred.float() > 0.5) & counted
    scores = {
        "dice": compute_dice(p.float(), t.float(), include_background=True, ignore_empty=ignore_empty),
        "iou": compute_iou(p.float(), t.float(), include_background=True, ignore_empty=ignore_empty),
    }
    if hd95:
        has_pred, has_target = p.flatten(2).any(-1), t.flatten(2).any(-1)
        both = has_pred & has_target
        hd = torch.full(both.shape, math.nan)
        if both.any():
            with warnings.catch_warnings():  # MONAI warns about the empty channels we discard below
                warnings.simplefilter("ignore")
                hd = compute_hausdorff_distance(p.cpu(), t.cpu(), include_background=True, percentile=95).float()
            hd = torch.where(both.cpu(), hd, torch.tensor(math.nan))
        scores["hd95"] = hd
        scores["missed"] = torch.where(has_target, (~has_pred).float(), math.nan).cpu()
    uncounted = ~counted.flatten(2).any(-1).cpu()
    return {k: torch.where(uncounted, torch.tensor(math.nan), v.detach().float().cpu()) for k, v in scores.items()}


class SegmentationMetrics(Metric):
    """Ignite metric: mean Dice over classes; per-class Dice, IoU and HD95 published beside it.

    The engine's value under ``name`` is a float (NaN when undefined) so MONAI's best-model logic
    can compare it. Also published: ``<name>/dice/<class>``, ``<name>/iou/<class>``,
    ``<name>/hd95/<class>`` and ``<name>/missed/<class>`` (where defined; with ``hd95``: the share of
    images with the structure whose prediction is empty, which HD95 leaves out) and the class means
    ``<name>/iou``, ``<name>/hd95`` and ``<name>/missed``.
    Each class value is the mean over the images where it is defined. Expects binarised predictions.
    Under DDP every rank's scores are gathered first.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        ignore_empty: bool = True,
        hd95: bool = True,
        output_transform: Callable = lambda output: output,
        device: str | torch.device = "cpu",
    ) -> None:
        self.class_names = tuple(class_names)
        self.ignore_empty = ignore_empty
        self.hd95 = hd95
        self.results: dict[str, dict[str, float]] = {}
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._scores: dict[str, list[torch.Tensor]] = {}

    def update(self, output: tuple) -> None:
        y_pred, y = (_as_batch(v).detach() for v in output)
        if y_pred.shape[1] != len(self.class_names):
            raise ValueError(f"prediction has {y_pred.shape[1]} channels for {len(self.class_names)} class names")
        for key, value in per_image_scores(y_pred, y, self.ignore_empty, self.hd95).items():
            self._scores.setdefault(key, []).append(value)

    def compute(self) -> float:
        width = len(self.class_names)
        self.results = {}
        for key in ("dice", "iou", "hd95", "missed") if self.hd95 else ("dice", "iou"):
            chunks = self._scores.get(key, [])
            scores = _gather(torch.cat(chunks) if chunks else torch.zeros(0, width))
            self.results[key] = {name: _nanmean(scores[:, c]) for c, name in enumerate(self.class_names)}
        return _nanmean(torch.tensor(list(self.results["dice"].values())))

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        for key, per_class in self.results.items():
            for cls, value in per_class.items():
                if math.isnan(value):  # undefined (no target, or HD95 of an empty prediction): out of the logs,
                    engine.state.metrics.pop(f"{name}/{key}/{cls}", None)  # and not last epoch's value either
                else:
                    engine.state.metrics[f"{name}/{key}/{cls}"] = value
            if key != "dice":
                engine.state.metrics[f"{name}/{key}"] = _nanmean(torch.tensor(list(per_class.values())))


def _nanmean(values: torch.Tensor) -> float:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else math.nan


class UndefinedKeyMetric(ValueError):
    """A validation gave no defined key metric (every truth mask empty): the data, not the model, is at fault."""


class SegmentationRecorder:
    """Evaluator handler: validation history (per-epoch Dice etc.) to JSON, best model to ``model_file``.

    The history is the record of convergence speed that the sample-efficiency experiment plots;
    ``info`` (e.g. the trainable-parameter count) is stored beside it. The model's ``state_dict``
    is saved whenever ``key_metric`` improves. Only rank 0 writes; every write is atomic. Its state
    goes into a resume checkpoint through ``state_dict``/``load_state_dict``; ``elapsed_s`` counts on
    from the last record when a run resumes.
    """

    def __init__(
        self,
        history_file: str | Path,
        key_metric: str,
        network: nn.Module | None = None,
        model_file: str | Path | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if (network is None) != (model_file is None):
            raise ValueError("network and model_file go together: give both to keep the best model, or neither")
        self.history_file = Path(history_file)
        self.key_metric = key_metric
        self.network = network
        self.model_file = None if model_file is None else Path(model_file)
        self.info = dict(info or {})
        self.history: list[dict[str, float | None]] = []
        self.best: dict[str, float | None] | None = None
        self.run_id = uuid.uuid4().hex  # which run wrote the history file; a resume keeps its checkpoint's
        self._start = time.monotonic()

    def attach(self, engine: Engine) -> None:
        from cxrdoll.engines.recorder import restore_best_metric

        engine.add_event_handler(Events.STARTED, lambda e: restore_best_metric(e, self.best, self.key_metric))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        import ignite.distributed as idist

        from cxrdoll.engines.recorder import improves, model_state_dict, with_record

        record: dict[str, float | None] = {"epoch": int(engine.state.epoch), "elapsed_s": time.monotonic() - self._start}
        for key, value in engine.state.metrics.items():
            if isinstance(value, (int, float, np.floating)) or (torch.is_tensor(value) and value.numel() == 1):
                record[key] = None if math.isnan(float(value)) else float(value)  # strict JSON has no NaN
        if self.key_metric not in record:
            raise KeyError(f"key metric {self.key_metric!r} not among the evaluator's metrics {sorted(record)}")
        value = record[self.key_metric]
        if value is None:
            raise UndefinedKeyMetric(
                f"validation at epoch {record['epoch']}: {self.key_metric} is undefined, so it cannot select "
                f"{self.model_file or 'a best model'}: no validation mask has a positive pixel in any class "
                "(the Dice of an empty truth mask is undefined). Give the datalist a validation split in which the "
                "structures appear (cxr_seg_adapter's --ignore_empty false scores empty masks instead)")
        self.history = with_record(self.history, record)
        if improves(record, self.best, self.key_metric):
            self.best = record  # improved, the first, or after a restored history without a defined best
        if idist.get_rank() != 0:
            return
        if self.best is record and self.model_file is not None:  # improved, or the first: always leave a model behind
            save_torch_atomic(self.model_file, model_state_dict(self.network))
        write_json_atomic(self.history_file, {**self.info, "key_metric": self.key_metric, "best": self.best,
                                              "history": self.history, "run_id": self.run_id})

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best, "info": self.info, "run_id": self.run_id}

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Refuse a resume under other settings (``info``), asked before the network is loaded."""
        from cxrdoll.engines.recorder import refuse_other_settings

        refuse_other_settings(state.get("info") or {}, self.info)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the history (with any validations only the history file holds) and its clock, so
        ``elapsed_s`` keeps counting; a run resumed under other settings (``info``) is refused."""
        from cxrdoll.engines.recorder import later_validations

        self.check_resumable(state)
        self.history = list(state["history"])
        self.best = state["best"]
        self.run_id = state.get("run_id") or self.run_id
        later = later_validations(self.history_file, self.history, state.get("run_id"))
        if later is not None:
            self.history, self.best = later["history"], later["best"]
        if self.history:
            self._start = time.monotonic() - float(self.history[-1].get("elapsed_s") or 0.0)
