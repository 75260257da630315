"""Grad-CAM (``monai.visualize``) and Grad-CAM++ (its closed form, on MONAI's hooks) behind the
common explainer interface."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks
from torch import nn

from cxrdoll.explain.common import (
    check_inputs, check_logits, eval_mode, eval_mode_with_grad, model_device, parameters_untouched,
)


class GradCAMppClosedForm(GradCAMpp):
    """Grad-CAM++ as Chattopadhyay et al. (2018) write it for ``Y = exp(S)``.

    MONAI's adds 1e-7 to the denominator of alpha, a constant that does not scale with the
    gradients: behind a global-average-pooled head g is about w / (h w), so at 320 px g squared is
    near 1e-7 and the constant takes over the weighting (top-10 % IoU about 0.7 against the paper's
    map). A zero denominator gives alpha 0 instead. The factor exp(S) of every weight is left out:
    it scales each map by a positive number, which the labels' per-map normalisation removes, and
    it overflows to inf past a logit of about 88 (NaN maps) or to 0 below about -104 (empty maps).
    """

    def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):  # type: ignore[override]
        _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        acti, grad = acti[layer_idx], grad[layer_idx]
        b, c, *spatial = grad.shape
        per_channel = (b, c, *[1] * len(spatial))
        squared = grad.pow(2)
        denominator = 2 * squared + (acti * grad.pow(3)).view(b, c, -1).sum(-1).view(per_channel)
        defined = denominator != 0
        alpha = torch.where(defined, squared / torch.where(defined, denominator, torch.ones_like(denominator)), 0.0)
        weights = (alpha * F.relu(grad)).view(b, c, -1).sum(-1).view(per_channel)
        return F.relu((weights * acti).sum(1, keepdim=True))


CAM_CLASSES = {"gradcam": GradCAM, "gradcampp": GradCAMppClosedForm}


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the module that produces the network's last spatial feature map.

    Runs ``example`` through ``model`` and returns the last module, in execution order, whose
    output is a ``(N, C, h, w)`` tensor with ``h * w > 1`` — for an ``encoder`` + pooling-head
    classifier that is the encoder's output (or the head's activation before pooling, e.g.
    ``class_layers.relu`` in MONAI's DenseNet), which is where Grad-CAM is usually taken.
    """
    calls: list[str] = []

    def record(name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
                calls.append(name)
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in model.named_modules() if name]
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        raise ValueError("no module of the model outputs a spatial feature map (N, C, h, w) with h*w > 1; "
                         "pass target_layer explicitly")
    return calls[-1]


class CAMExplainer:
    """Grad-CAM / Grad-CAM++ maps, bilinearly upsampled to the image, not normalised.

    Args:
        model: classifier returning logits ``(N, K)``.
        method: ``gradcam`` or ``gradcampp``.
        target_layer: module name (as in ``model.named_modules()``); found automatically with
            :func:`find_target_layer` on the first call when None.
        max_batch: most images per forward pass.

    MONAI registers its hooks on the model for the model's lifetime (and turns off ``inplace``
    on the target layer); build one explainer per model and reuse it.
    """

    def __init__(self, model: nn.Module, method: str = "gradcam", target_layer: str | None = None,
                 max_batch: int = 16) -> None:
        if method not in CAM_CLASSES:
            raise ValueError(f"unknown CAM method {method!r}; expected one of {sorted(CAM_CLASSES)}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        names = {name for name, _ in model.named_modules() if name}
        if target_layer is not None and target_layer not in names:
            raise ValueError(f"target_layer {target_layer!r} is not a module of the model")
        self.model = model
        self.method = method
        self.target_layer = target_layer
        self.max_batch = int(max_batch)
        self._cam: GradCAM | None = None

    def _build(self, example: torch.Tensor) -> GradCAM:
        if self._cam is None:
            if self.target_layer is None:
                self.target_layer = find_target_layer(self.model, example)
            hooked = ModelWithHooks(self.model, self.target_layer, register_forward=True, register_backward=True)
            self._cam = CAM_CLASSES[self.method](nn_module=hooked, target_layers=self.target_layer,
                                                 postprocessing=_identity)
        return self._cam

    def attribute(self, images: torch.Tensor, targets: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per image ``i``, float32 ``(len(targets[i]), H, W)``: the CAM for each target class."""
        targets = check_inputs(images, targets)
        device = model_device(self.model)
        x = images.detach().to(device=device, dtype=torch.float32)
        out = [torch.zeros((len(t), *x.shape[2:]), device=x.device) for t in targets]
        if not any(targets):
            return [o.to(images.device) for o in out]
        cam = self._build(x[:1])
        # MONAI's hooks call zero_grad and backpropagate into the weights; only the layer's gradient is
        # needed, and the caller's .grad must survive.
        with eval_mode_with_grad(self.model), parameters_untouched(self.model):
            with torch.no_grad():
                check_logits(self.model(x[:1]), targets)
            # Images that need the same class share a forward/backward pass.
            for cls in sorted({c for t in targets for c in t}):
                pairs = [(i, j) for i, t in enumerate(targets) for j, c in enumerate(t) if c == cls]
                for start in range(0, len(pairs), self.max_batch):
                    chunk = pairs[start : start + self.max_batch]
                    batch = x[[i for i, _ in chunk]].requires_grad_(True)
                    maps = cam(batch, class_idx=cls)[:, 0].detach().float()
                    for (i, j), m in zip(chunk, maps):
                        out[i][j] = m
            # Drop the cached activations/gradients so they do not pin the last graph in memory.
            cam.nn_module.activations.clear()
            cam.nn_module.gradients.clear()
        return [o.to(images.device) for o in out]


def _identity(x: torch.Tensor) -> torch.Tensor:
    """Post-processing belongs to ``cxrdoll.labels``; keep MONAI's CAM values as they are."""
    return x
