"""Write a segmentation network as a deployable bundle folder (TorchScript + metadata.json)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Sequence

import torch

from cxrdoll.io import atomic_path, write_json_atomic


def network_data_format(channel_names: Sequence[str], spatial_size: int) -> dict:
    """``network_data_format`` for a 1-channel ``size x size`` input: the network gives per-channel
    logits (``pred``), a sigmoid makes them the [0, 1] segmentation (``post_processed_outputs``)."""
    def output(fmt: str, value_range: list) -> dict:
        return {
            "type": "image", "format": fmt, "num_channels": len(channel_names),
            "spatial_shape": [spatial_size, spatial_size], "dtype": "float32", "value_range": value_range,
            "is_patch_data": False, "channel_def": {str(i): name for i, name in enumerate(channel_names)},
        }

    return {
        "inputs": {
            "image": {
                "type": "image", "format": "magnitude", "modality": "XR", "num_channels": 1,
                "spatial_shape": [spatial_size, spatial_size], "dtype": "float32", "value_range": [0, 1],
                "is_patch_data": False, "channel_def": {"0": "image"},
            }
        },
        "outputs": {"pred": output("logits", [])},
        "post_processed_outputs": {"pred": output("segmentation", [0, 1])},
    }


def export_seg_bundle(
    network: torch.nn.Module, root: str | os.PathLike, channel_names: Sequence[str], spatial_size: int,
    name: str = "cxr segmentation",
) -> Path:
    """Script a copy of ``network`` to ``models/model.ts`` and write ``configs/metadata.json``; returns ``root``.

    Scripted, as the bundles' ``ckpt_export`` does, not traced: a trace freezes the sizes it saw, so
    a PSP decoder failed at every other size and a U-Net lost its "not divisible by 32" error.
    The caller's network keeps its mode and device.
    """
    root = Path(root)
    scripted = torch.jit.script(copy.deepcopy(network).eval().cpu())
    with atomic_path(root / "models" / "model.ts") as tmp:
        torch.jit.save(scripted, str(tmp))
    write_json_atomic(
        root / "configs" / "metadata.json",
        {"name": name, "version": "0.1.0", "network_data_format": network_data_format(channel_names, spatial_size)},
    )
    return root
