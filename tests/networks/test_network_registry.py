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


@pytest.mark.parametrize("name", ["densenet121", "resnet50", "seresnext50", "efficientnet-b0"])
def test_encoder_features_match_declared_channels_and_strides(name):
    encoder = build_encoder(name).eval()
    with torch.no_grad():
        features = encoder(torch.zeros(1, 1, 64, 96))
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert [(64 // f.shape[2], 96 // f.shape[3]) for f in features] == [(s, s) for s in STRIDES]


def test_classifier_options_reach_the_network():
    model = build_classifier("resnet10", in_channels=3, num_classes=5, dropout=0.5)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)
    assert model.head.dropout.p == 0.5
    assert model.encoder.stages[0].conv1.in_channels == 3


def test_unknown_architecture_names_the_choices():
    with pytest.raises(KeyError, match=r"unknown network 'densenet122'; expected one of \[.*'densenet121'"):
        build_classifier("densenet122")
