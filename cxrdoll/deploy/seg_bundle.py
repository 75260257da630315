"""A segmentation bundle as the deploy app runs it: network + ``network_data_format``, no SDK needed.

Contract (docs/FORMATS.md, "DICOM SEG output and the deployable segmentation bundle"): the network
is ``models/model.ts`` (TorchScript) or, without it, ``network_def`` of ``configs/inference.json``
with weights from ``models/model.pt``. Its input ``spatial_shape`` and output channel names come from the training
record beside ``models/model.pt`` when there is one (a bundle trained in place still carries the
template ``configs/metadata.json``), else from ``metadata.json``'s ``network_data_format``, else
from ``image_size`` and ``class_names`` of ``configs/inference.json``. The network returns
per-channel logits; sigmoid > threshold gives the masks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxrdoll.engines.recorder import trained_setting
from cxrdoll.io import read_json
from cxrdoll.networks.checkpoints import load_network_weights, load_problem

logger = logging.getLogger(__name__)
IOFormat = tuple[tuple[int, int], list[str]]  # input (height, width), output channel names


@dataclass
class SegBundle:
    """A loaded segmentation network and what its metadata says about inputs and outputs."""

    root: Path
    network: torch.nn.Module
    spatial_shape: tuple[int, int]
    channel_names: list[str]
    device: torch.device
    described_by: str = "configs/metadata.json"  # where the shape and names were read from

    @classmethod
    def load(cls, root: str | os.PathLike, device: str | torch.device = "cpu") -> "SegBundle":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: bundle folder not found")
        config = _inference_config(root)
        (spatial_shape, names), described_by = _io_format(root, config)
        device = torch.device(device)
        # channels_last: about 25 % less CPU time per 512^2 image for the DenseNet-121 U-Net (oneDNN).
        network = _load_network(root, config, device).to(memory_format=torch.channels_last)
        network.eval()
        bundle = cls(root, network, spatial_shape, names, device, described_by)
        bundle.warm_up()
        return bundle

    @torch.inference_mode()
    def warm_up(self, passes: int = 2) -> None:
        """Run the network ``passes`` times on a blank input, so the first cases pay no set-up.

        TorchScript's profiling executor optimises the graph on its second call: on an H200 that
        call took 6.9 s against 0.013 s for later ones (benchmarks/results/dicom_latency_gpu.json),
        and on the 2-core CPU about 0.66 s against 0.42 s for a 512 px DenseNet-121 U-Net.
        """
        blank = torch.zeros(1, 1, *self.spatial_shape, device=self.device).contiguous(memory_format=torch.channels_last)
        for _ in range(passes):
            self.network(blank)

    @torch.inference_mode()
    def predict(self, image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Boolean masks ``(N, H, W)`` at the input's resolution for a ``(1, H, W)`` float image in [0, 1]
        (numpy or torch); integer pixels and values outside [0, 1] are refused."""
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) image, got shape {image.shape}")
        height, width = image.shape[1:]
        x = torch.as_tensor(image)
        # The network was trained on [0, 1]: 8-bit pixels (0..255) gave masks without an error.
        if not x.is_floating_point():
            raise ValueError(f"expected a float image in [0, 1], got {str(x.dtype).replace('torch.', '')} pixels; load it with "
                             "cxrdoll.dicom.load_cxr_dicom, or scale it with cxrdoll.data.transforms.unit_range")
        lo, hi = (float(v) for v in x.aminmax())
        if lo < 0 or hi > 1:
            raise ValueError(f"expected a float image in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; load it with "
                             "cxrdoll.dicom.load_cxr_dicom, or scale it with cxrdoll.data.transforms.unit_range")
        x = x.to(device=self.device, dtype=torch.float32)[None]
        x = torch.nn.functional.interpolate(x, size=self.spatial_shape, mode="area")
        logits = self.network(x.contiguous(memory_format=torch.channels_last))
        if logits.shape[:2] != (1, len(self.channel_names)):
            raise ValueError(
                f"{self.root}: network gave shape {tuple(logits.shape)}; {self.described_by} declares "
                f"{len(self.channel_names)} channels {self.channel_names}"
            )
        probs = torch.sigmoid(logits.float())
        probs = torch.nn.functional.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
        return (probs[0] > threshold).cpu().numpy()


def _inference_config(root: Path):
    """The parsed ``configs/inference.json`` (a monai ConfigParser), or None when absent."""
    path = root / "configs" / "inference.json"
    if not path.is_file():
        return None
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(root)
    return parser


def _io_format(root: Path, config) -> tuple[IOFormat, str]:
    """Input shape and channel names, and where they come from: what training recorded, else what
    the bundle declares (see above)."""
    trained, declared = _trained_format(root), _metadata_format(root)
    if trained is not None:
        fmt, source = trained, "the training record beside models/model.pt"
    elif declared is not None:
        fmt, source = declared, "configs/metadata.json"
    else:
        fmt, source = _config_format(config), "configs/inference.json"
    if fmt is None:
        raise ValueError(
            f"{root}: no network_data_format in configs/metadata.json and no image_size/class_names in configs/inference.json"
        )
    if declared is not None and fmt != declared:
        logger.warning(
            "%s: configs/metadata.json declares %s at %s px, but models/model.pt was trained for %s at %s px "
            "(the training record beside it); using the latter. Export the bundle to make them agree.",
            root, declared[1], _side(declared), fmt[1], _side(fmt),
        )
    return fmt, source


def _side(fmt: IOFormat) -> str:
    return "x".join(map(str, fmt[0]))


def _trained_format(root: Path) -> IOFormat | None:
    """``image_size`` and ``class_names`` the training bundle recorded beside ``models/model.pt``, or None."""
    checkpoint = root / "models" / "model.pt"
    size, names = trained_setting(checkpoint, "image_size", None), trained_setting(checkpoint, "class_names", None)
    if size is None or names is None:
        return None
    return (int(size), int(size)), [str(n) for n in names]


def _metadata_format(root: Path) -> IOFormat | None:
    """``network_data_format`` of ``configs/metadata.json``, or None when it has none."""
    meta_path = root / "configs" / "metadata.json"
    fmt = read_json(meta_path).get("network_data_format") if meta_path.is_file() else None
    if not fmt:
        return None
    if isinstance(fmt.get("outputs"), dict) and (fmt["outputs"].get("pred") or {}).get("format") == "classes":
        raise ValueError(f"{meta_path}: outputs.pred is one score per class for the whole image (format 'classes'), "
                         "a classifier's; the app runs segmentation bundles, which give one map per class")
    try:
        image_in, channel_def = fmt["inputs"]["image"], fmt["outputs"]["pred"]["channel_def"]
        spatial_shape = tuple(int(v) for v in image_in["spatial_shape"])
        names = [channel_def[str(i)] for i in range(len(channel_def))]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{meta_path}: network_data_format needs inputs.image.spatial_shape and outputs.pred.channel_def "
            f"with keys '0'..'N-1' ({type(err).__name__}: {err})"
        ) from None
    if int(image_in.get("num_channels", 1)) != 1 or len(spatial_shape) != 2:
        raise ValueError(f"{meta_path}: expected a 1-channel 2-D input, got {image_in}")
    return (spatial_shape[0], spatial_shape[1]), names


def _config_format(config) -> IOFormat | None:
    """``image_size`` and ``class_names`` of ``configs/inference.json``, or None when it lacks them."""
    if config is None or "class_names" not in config or "image_size" not in config:
        return None
    size = int(config.get_parsed_content("image_size"))
    return (size, size), [str(n) for n in config.get_parsed_content("class_names")]


def _load_network(root: Path, config, device: torch.device) -> torch.nn.Module:
    torchscript = root / "models" / "model.ts"
    if torchscript.is_file():
        return _load_torchscript(torchscript, device)
    weights = root / "models" / "model.pt"
    if config is None or not weights.is_file():
        raise FileNotFoundError(f"{root}: needs models/model.ts, or configs/inference.json with models/model.pt")
    if "network_def" not in config:
        raise KeyError(f"{root / 'configs' / 'inference.json'}: no 'network_def'")
    network = config.get_parsed_content("network_def")
    load_network_weights(network, weights)  # a bare state_dict, or one nested under "model" as training saves it
    return network.to(device)


def _load_torchscript(path: Path, device: torch.device) -> torch.nn.Module:
    """``torch.jit.load`` failing with the file's name: torch's message for a truncated or foreign
    file ("PytorchStreamReader failed reading zip archive") names neither it nor the cause."""
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as err:  # torch raises several types for corrupt, truncated or foreign files
        raise ValueError(f"{path}: cannot load as a TorchScript model: {load_problem(path, err)}") from None
