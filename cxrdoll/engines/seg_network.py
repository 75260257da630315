"""The segmenter the pre-training bundle trains: 14 DoLL channels, optionally on a classifier's encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.networks import Segmenter, build_segmenter, init_encoder_from_classifier


def pretraining_segmenter(
    encoder_name: str, decoder: str = "unet", init_ckpt: str | Path | None = None, **kw: Any
) -> Segmenter:
    """``build_segmenter`` with one output per observation; ``init_ckpt`` (a classifier checkpoint) sets the encoder."""
    model = build_segmenter(encoder_name, decoder, out_channels=len(OBSERVATIONS), **kw)
    if init_ckpt:
        init_encoder_from_classifier(model, init_ckpt, model_name=f"{encoder_name} encoder")
    return model
