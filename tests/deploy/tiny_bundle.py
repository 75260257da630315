"""A tiny segmentation bundle with the adapter bundle's network_data_format, for deploy tests."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import UNet

from cxrdoll.deploy.export import export_seg_bundle

NAMES = ["left lung", "heart", "right clavicle"]
SIZE = 64


def tiny_network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    network = UNet(spatial_dims=2, in_channels=1, out_channels=len(NAMES), channels=(4, 8), strides=(2,), num_res_units=0)
    with torch.no_grad():  # a bias so that some pixels pass 0.5 and some do not
        network.model[-1].conv.bias.copy_(torch.tensor([0.0, -0.05, 0.05]))
    return network.eval()


def make_tiny_bundle(root: Path, seed: int = 0) -> Path:
    return export_seg_bundle(tiny_network(seed), root, NAMES, SIZE, name="tiny test segmenter")
