"""Multi-scale encoders cut out of MONAI classification networks.

Every encoder is a ``FeatureEncoder``: a list of five stages whose outputs sit at strides
2, 4, 8, 16 and 32. The classifier pools the last map; the segmenter decodes all of them. Both hold
the same ``FeatureEncoder`` under the attribute ``encoder``, so their ``encoder.*`` state-dict keys
are identical and a classifier checkpoint initialises a segmentation backbone directly.
"""

from __future__ import annotations

import copy
import numbers
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, List

import torch
from monai.networks import nets
from torch import nn

STRIDES: tuple[int, ...] = (2, 4, 8, 16, 32)
# Side of the probe image used to measure each stage's channels and stride at build time.
_PROBE_SIZE = 64


def checked_image_size(value: Any, *, whole_strides: bool = False) -> int:
    """``value`` as an image side in pixels, or a ValueError saying what the networks take.

    Checked where a bundle first uses its ``image_size``, before any image is loaded or cached:
    otherwise 0 fails in numpy, a side under the deepest stride (32) inside a pooling layer, and a
    segmenter side that is not a multiple of it (``whole_strides``) only at the first training step.
    """
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        size = int(value)
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        size = int(value)
    else:
        raise ValueError(f"image size {value!r} is not a whole number of pixels")
    stride = STRIDES[-1]
    if size < stride:
        raise ValueError(f"image size {size} px is below {stride} px, the smallest side the networks take "
                         f"(they downsample {stride}x)")
    if whole_strides and size % stride:
        lower = size - size % stride
        raise ValueError(f"image size {size} px is not a multiple of {stride} px, which the segmentation network "
                         f"needs for its skip connections to line up (try {lower} or {lower + stride})")
    return size


class FeatureEncoder(nn.Module):
    """Runs its stages in order and returns every stage's output (finest first)."""

    def __init__(self, stages: list[nn.Module], in_channels: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.in_channels = in_channels
        self.out_channels, self.strides = _probe(self.stages, in_channels)
        if tuple(self.strides) != STRIDES:
            raise ValueError(f"encoder stages have strides {self.strides}, expected {list(STRIDES)}")

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features: List[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


@torch.no_grad()
def _probe(stages: nn.ModuleList, in_channels: int) -> tuple[list[int], list[int]]:
    """Channels and strides of each stage, measured on a small input in eval mode (no BN updates)."""
    was_training = stages.training
    stages.eval()
    x = torch.zeros(1, in_channels, _PROBE_SIZE, _PROBE_SIZE)
    channels, strides = [], []
    for stage in stages:
        x = stage(x)
        channels.append(int(x.shape[1]))
        strides.append(_PROBE_SIZE // int(x.shape[-1]))
    stages.train(was_training)
    return channels, strides


def _sequential(parent: nn.Module, *names: str, extra: dict[str, nn.Module] | None = None) -> nn.Sequential:
    """A stage made of ``parent``'s named children (names kept, so keys stay readable)."""
    modules = OrderedDict((name, getattr(parent, name)) for name in names)
    modules.update(extra or {})
    return nn.Sequential(modules)


def _densenet(factory: Callable[..., nn.Module], in_channels: int, **kw: Any) -> FeatureEncoder:
    f = factory(spatial_dims=2, in_channels=in_channels, out_channels=1, **kw).features
    relu5 = {"relu5": nn.ReLU(inplace=True)}  # DenseNet applies ReLU after norm5 in its classifier head
    stages = [
        _sequential(f, "conv0", "norm0", "relu0"),
        _sequential(f, "pool0", "denseblock1"),
        _sequential(f, "transition1", "denseblock2"),
        _sequential(f, "transition2", "denseblock3"),
        _sequential(f, "transition3", "denseblock4", "norm5", extra=relu5),
    ]
    return FeatureEncoder(stages, in_channels)


def _resnet(factory: Callable[..., nn.Module], in_channels: int, **kw: Any) -> FeatureEncoder:
    # MONAI's ResNet defaults to a stride-1 stem (3D MedicalNet); a 2D CXR stem has stride 2.
    kw.setdefault("conv1_t_stride", 2)
    net = factory(spatial_dims=2, n_input_channels=in_channels, num_classes=1, **kw)
    stages = [
        _sequential(net, "conv1", "bn1", "act"),
        _sequential(net, "maxpool", "layer1"),
        net.layer2,
        net.layer3,
        net.layer4,
    ]
    return FeatureEncoder(stages, in_channels)


def _senet(factory: Callable[..., nn.Module], in_channels: int, **kw: Any) -> FeatureEncoder:
    net = factory(spatial_dims=2, in_channels=in_channels, num_classes=1, **kw)
    stem = [name for name, _ in net.layer0.named_children() if name != "pool"]
    stages = [
        _sequential(net.layer0, *stem),
        nn.Sequential(OrderedDict(pool=net.layer0.pool, layer1=net.layer1)),
        net.layer2,
        net.layer3,
        net.layer4,
    ]
    return FeatureEncoder(stages, in_channels)


def _efficientnet(model_name: str, in_channels: int, bn_momentum: float = 0.1, **kw: Any) -> FeatureEncoder:
    """EfficientNet stages; batch norms use PyTorch's default momentum 0.1, not TensorFlow's 0.01.

    MONAI keeps the TF value (momentum 0.01), made for long ImageNet schedules. Trained from scratch
    for a few hundred steps, the running statistics then stay near their initial values and the
    model in eval mode scores chance (seen: validation AUROC 0.50 in eval mode, 0.67 with batch
    statistics, after 3 epochs of the CPU demo).
    """
    net = nets.EfficientNetBN(
        model_name, pretrained=False, spatial_dims=2, in_channels=in_channels, num_classes=1, **kw
    )
    net.set_swish(memory_efficient=False)  # the memory-efficient swish is a custom autograd op TorchScript rejects
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = bn_momentum
    blocks = net._blocks
    stages = [
        nn.Sequential(
            OrderedDict(
                stem_padding=net._conv_stem_padding,
                stem=net._conv_stem,
                bn0=net._bn0,
                act0=copy.deepcopy(net._swish),
                blocks0=blocks[0],
            )
        ),
        nn.Sequential(OrderedDict(blocks1=blocks[1])),
        nn.Sequential(OrderedDict(blocks2=blocks[2])),
        nn.Sequential(OrderedDict(blocks3=blocks[3], blocks4=blocks[4])),
        nn.Sequential(
            OrderedDict(
                blocks5=blocks[5],
                blocks6=blocks[6],
                head_padding=net._conv_head_padding,
                head=net._conv_head,
                bn1=net._bn1,
                act1=copy.deepcopy(net._swish),
            )
        ),
    ]
    return FeatureEncoder(stages, in_channels)


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one registered encoder; ``paper`` marks the architectures of the DoLL zoo."""

    build: Callable[..., FeatureEncoder]
    paper: bool = True


def _spec(family: Callable[..., FeatureEncoder], factory: Any, paper: bool = True, **defaults: Any) -> EncoderSpec:
    def build(in_channels: int = 1, **kw: Any) -> FeatureEncoder:
        return family(factory, in_channels, **{**defaults, **kw})

    return EncoderSpec(build, paper)


ENCODERS: dict[str, EncoderSpec] = {
    "densenet121": _spec(_densenet, nets.DenseNet121),
    "densenet169": _spec(_densenet, nets.DenseNet169),
    "densenet201": _spec(_densenet, nets.DenseNet201),
    "resnet18": _spec(_resnet, nets.resnet18),
    "resnet34": _spec(_resnet, nets.resnet34),
    "resnet50": _spec(_resnet, nets.resnet50),
    "resnet101": _spec(_resnet, nets.resnet101),
    "resnet152": _spec(_resnet, nets.resnet152),
    "seresnet50": _spec(_senet, nets.SEResNet50),
    "seresnet101": _spec(_senet, nets.SEResNet101),
    "seresnet152": _spec(_senet, nets.SEResNet152),
    "seresnext50": _spec(_senet, nets.SEResNext50),
    "seresnext101": _spec(_senet, nets.SEResNext101),
    **{f"efficientnet-b{i}": _spec(_efficientnet, f"efficientnet-b{i}") for i in range(5)},
    # Small members for CPU experiments and fast tests; not part of the paper's zoo.
    "resnet10": _spec(_resnet, nets.resnet10, paper=False),
    "densenet_tiny": _spec(
        _densenet, nets.DenseNet, paper=False, init_features=16, growth_rate=8, block_config=(2, 2, 2, 2), bn_size=2
    ),
}


def build_encoder(name: str, in_channels: int = 1, **kw: Any) -> FeatureEncoder:
    """Build a registered encoder by name (randomly initialised: no weight downloads)."""
    try:
        spec = ENCODERS[name]
    except KeyError:
        raise KeyError(f"unknown network {name!r}; expected one of {sorted(ENCODERS)}") from None
    return spec.build(in_channels=in_channels, **kw)
