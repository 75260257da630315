"""Per-observation AUROC over labelled entries, and its mean over the CheXpert competition five."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from scipy.stats import rankdata

from cxrdoll.constants import COMPETITION_OBSERVATIONS, OBSERVATIONS


def binary_auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Mann-Whitney AUROC with ties counted as one half; ``None`` when only one class is present.

    ``labels`` are 0/1 (or bool), one per score.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same shape")
    if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
        # astype(bool) counted CheXpert's uncertain -1 as positive (and NaN too).
        found = np.unique(labels[~np.isin(labels, (0, 1))])[:5].tolist()
        raise ValueError(f"labels must be 0 or 1, found {found}; give uncertain or unknown entries as NaN to "
                         "masked_auroc, which leaves them out")
    labels = labels.astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def masked_auroc(
    scores: np.ndarray, labels: np.ndarray, observations: Sequence[str] = OBSERVATIONS
) -> dict[str, float | None]:
    """AUROC per column of ``(N, C)`` arrays, using only rows whose label is not NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.shape != labels.shape or scores.ndim != 2 or scores.shape[1] != len(observations):
        raise ValueError(
            f"scores {scores.shape} and labels {labels.shape} must both be (N, {len(observations)})"
        )
    result: dict[str, float | None] = {}
    for c, name in enumerate(observations):
        known = ~np.isnan(labels[:, c])
        result[name] = binary_auroc(scores[known, c], labels[known, c])
    return result


def mean_of_defined(values: dict[str, float | None], names: Sequence[str]) -> float | None:
    """Mean over ``names`` whose AUROC is defined; ``None`` when none is."""
    defined = [values[n] for n in names if values.get(n) is not None]
    return float(np.mean(defined)) if defined else None


class MaskedAUROC(Metric):
    """Ignite metric: mean AUROC over ``mean_over``; per-observation values kept in ``per_observation``.

    The engine's metric value is a float (NaN when undefined) so that MONAI's best-model logic
    can compare it; each defined per-observation AUROC is also published as ``<name>/<observation>``
    for TensorBoard and the console. Under DDP every rank's predictions are gathered first.
    """

    def __init__(
        self,
        observations: Sequence[str] = OBSERVATIONS,
        mean_over: Sequence[str] = COMPETITION_OBSERVATIONS,
        output_transform: Callable = lambda output: output,
        device: str | torch.device = "cpu",
    ) -> None:
        unknown = [n for n in mean_over if n not in observations]
        if unknown:
            raise ValueError(f"mean_over names {unknown} are not among the observations")
        self.observations = tuple(observations)
        self.mean_over = tuple(mean_over)
        self.per_observation: dict[str, float | None] = {}
        self.mean: float | None = None
        self.num_samples = 0
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, output: tuple) -> None:
        y_pred, y = output
        # Copies: a CPU batch from a DataLoader worker lives in shared memory, one open descriptor per
        # batch kept; a 19K-image validation at batch 16 ran out of descriptors ("Too many open files").
        self._scores.append(_as_batch(y_pred).detach().to("cpu", torch.float32, copy=True))
        self._labels.append(_as_batch(y).detach().to("cpu", torch.float32, copy=True))

    def compute(self) -> float:
        width = len(self.observations)
        scores = torch.cat(self._scores) if self._scores else torch.zeros(0, width)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, width)
        scores, labels = _gather(scores), _gather(labels)
        self.num_samples = len(labels)
        self.per_observation = masked_auroc(scores.numpy(), labels.numpy(), self.observations)
        self.mean = mean_of_defined(self.per_observation, self.mean_over)
        return math.nan if self.mean is None else self.mean

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        for obs, value in self.per_observation.items():
            if value is not None:
                engine.state.metrics[f"{name}/{obs}"] = value


def _as_batch(value) -> torch.Tensor:
    """MONAI engines hand over a batch tensor, or a list of per-sample tensors when decollated."""
    if isinstance(value, (list, tuple)):
        return torch.stack([torch.as_tensor(v) for v in value])
    return torch.as_tensor(value)


def _gather(data: torch.Tensor) -> torch.Tensor:
    import ignite.distributed as idist
    from monai.utils import evenly_divisible_all_gather

    if idist.get_world_size() <= 1:
        return data
    return evenly_divisible_all_gather(data.to(idist.device()), concat=True).cpu()
