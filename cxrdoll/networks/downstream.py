"""One call that builds a downstream segmenter for each fine-tuning mode of cxr_seg_adapter.

Bundle configs reference these by ``_target_``: ``build_downstream_segmenter`` gives the bare
structure (inference, loading a fine-tuned checkpoint); ``prepare_downstream_segmenter`` also loads
the starting weights and sets what trains.
"""

from __future__ import annotations

from typing import Any

from cxrdoll.networks.adapters import MODES, add_adapters, configure_trainable
from cxrdoll.networks.checkpoints import CheckpointLike, init_encoder_from_classifier, load_segmenter_checkpoint
from cxrdoll.networks.segmenter import Segmenter, build_segmenter


def build_downstream_segmenter(
    encoder_name: str,
    out_channels: int,
    mode: str = "adapters",
    decoder: str = "unet",
    adapter_reduction: int = 4,
    **kw: Any,
) -> Segmenter:
    """The segmenter of ``mode``: adapters inserted for "adapters", ``out_channels`` downstream classes."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)}")
    segmenter = build_segmenter(encoder_name, decoder=decoder, out_channels=out_channels, **kw)
    if mode == "adapters":
        add_adapters(segmenter, reduction=adapter_reduction)
    return segmenter


def prepare_downstream_segmenter(
    encoder_name: str,
    out_channels: int,
    mode: str = "adapters",
    decoder: str = "unet",
    pretrained_ckpt: CheckpointLike | None = None,
    classifier_ckpt: CheckpointLike | None = None,
    freeze_decoder: bool = False,
    adapter_reduction: int = 4,
    **kw: Any,
) -> Segmenter:
    """Build, initialise and freeze for one starting point of the sample-efficiency experiment.

    ``pretrained_ckpt`` (a DoLL segmenter) initialises encoder and decoder; ``classifier_ckpt``
    the encoder alone (backbone-only baseline). The head is always new. "scratch" takes neither;
    the other modes need one, and those that freeze the decoder need ``pretrained_ckpt``.
    """
    given = [c for c in (pretrained_ckpt, classifier_ckpt) if c is not None and c != ""]
    if len(given) == 2:  # the segmenter's encoder would silently replace the classifier's
        raise ValueError("give pretrained_ckpt (a DoLL segmenter: encoder and decoder) or classifier_ckpt (the "
                         "encoder alone), not both; for the backbone-only start pass pretrained_ckpt null")
    if mode == "scratch" and given:
        raise ValueError("mode 'scratch' trains from random weights; do not pass a checkpoint")
    if mode != "scratch" and not given:
        raise ValueError(f"mode {mode!r} needs pretrained_ckpt (DoLL segmenter) or classifier_ckpt (encoder only)")
    if not pretrained_ckpt and (mode == "head" or (mode == "adapters" and freeze_decoder)):
        frozen = "mode 'head'" if mode == "head" else "mode 'adapters' with freeze_decoder"
        raise ValueError(f"{frozen} freezes the decoder, so it needs pretrained_ckpt (a pre-trained segmenter): "
                         "from a classifier alone the frozen decoder would stay random")
    segmenter = build_downstream_segmenter(encoder_name, out_channels, mode, decoder, adapter_reduction, **kw)
    if classifier_ckpt:
        init_encoder_from_classifier(segmenter, classifier_ckpt, model_name=f"{encoder_name} encoder")
    if pretrained_ckpt:
        load_segmenter_checkpoint(segmenter, pretrained_ckpt, head=False, model_name=f"{encoder_name} {decoder}")
    configure_trainable(segmenter, mode, freeze_decoder)
    return segmenter
