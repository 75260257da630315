"""The classifier zoo: every registered architecture builds, and encoders honour the stride contract."""

from __future__ import annotations

import pytest
import torch

from cxrdoll.networks import (
    CLASSIFIER_NAMES,
    ENCODERS,
    PAPER_CLASSIFIER_NAMES,
    STRIDES,
    build_classifier,
    build_encoder,
)


def test_zoo_has_the_papers_seventeen_plus_architectures():
    assert len(PAPER_CLASSIFIER_NAMES) >= 17
    assert {"densenet121", "resnet18", "seresnext50", "efficientnet-b0"} <= set(PAPER_CLASSIFIER_NAMES)
    assert set(CLASSIFIER_NAMES) == set(ENCODERS)


# Published feature widths per stage (torchvision / segmentation_models_pytorch encoders).
REFERENCE_CHANNELS = {
    "densenet121": [64, 256, 512, 1024, 1024],
    "densenet201": [64, 256, 512, 1792, 1920],
    "resnet18": [64, 64, 128, 256, 512],
    "resnet50": [64, 256, 512, 1024, 2048],
    "seresnext50": [64, 256, 512, 1024, 2048],
    "efficientnet-b0": [16, 24, 40, 112, 1280],
    "efficientnet-b4": [24, 32, 56, 160, 1792],
}


def test_every_registered_classifier_gives_14_logits_per_image():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    for name in CLASSIFIER_NAMES:
        model = build_classifier(name).eval()
        with torch.no_grad():
            logits = model(x)
        assert logits.shape == (2, 14), name
        assert torch.isfinite(logits).all(), name
        assert model.encoder.strides == list(STRIDES), name
        if name in REFERENCE_CHANNELS:
            assert model.encoder.out_channels == REFERENCE_CHANNELS[name], name


def test_encoder_features_have_declared_channels_and_strides_on_non_square_input():
    encoder = build_encoder("resnet10").eval()
    with torch.no_grad():
        features = encoder(torch.zeros(1, 1, 64, 96))
    assert [f.shape[1] for f in features] == encoder.out_channels == [64, 64, 128, 256, 512]
    assert [(64 // f.shape[2], 96 // f.shape[3]) for f in features] == [(s, s) for s in STRIDES]


def test_classifier_options_reach_the_network():
    model = build_classifier("resnet10", in_channels=3, num_classes=5, dropout=0.5)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)
    assert model.head.dropout.p == 0.5
    assert model.encoder.stages[0].conv1.in_channels == 3


def test_unknown_architecture_names_the_choices():
    with pytest.raises(KeyError, match=r"unknown network 'densenet122'; expected one of \[.*'densenet121'"):
        build_classifier("densenet122")
