"""Explainers of CXR classifiers behind one interface (docs/FORMATS.md, "Explainers").

``build_explainer(name, model, **options).attribute(images (B, 1, H, W), targets)`` returns, per
image, a float32 ``(len(targets[i]), H, W)`` map per target class.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from cxrdoll.explain.baselines import BASELINES, make_baseline
from cxrdoll.explain.cam import CAMExplainer, find_target_layer
from cxrdoll.explain.integrated_gradients import FastIntegratedGradients, quadrature
from cxrdoll.explain.occlusion import OcclusionExplainer

EXPLAINERS: dict[str, Callable[..., Any]] = {
    "ig": FastIntegratedGradients,
    "gradcam": lambda model, **options: CAMExplainer(model, method="gradcam", **options),
    "gradcampp": lambda model, **options: CAMExplainer(model, method="gradcampp", **options),
    "occlusion": OcclusionExplainer,
}


def build_explainer(name: str, model: nn.Module, **options: Any):
    """Explainer ``name`` (one of ``EXPLAINERS``) for ``model``; ``options`` go to its constructor."""
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer {name!r}; expected one of {sorted(EXPLAINERS)}")
    try:
        return EXPLAINERS[name](model, **options)
    except TypeError as err:  # an option the explainer does not take: say which explainer
        raise ValueError(f"explainer {name!r}: {err}") from None


__all__ = [
    "BASELINES",
    "EXPLAINERS",
    "CAMExplainer",
    "FastIntegratedGradients",
    "OcclusionExplainer",
    "build_explainer",
    "find_target_layer",
    "make_baseline",
    "quadrature",
]
