"""Segmenters: shared encoder keys with the classifier, output geometry, and clear input errors."""

from __future__ import annotations

import pytest
import torch

from cxrdoll.networks import build_classifier, build_segmenter

SMALL_UNET = {"decoder_channels": (32, 16, 16, 8, 8)}


@pytest.mark.parametrize(
    ("arch", "decoder"),
    [("densenet121", "unet"), ("resnet18", "psp"), ("seresnext50", "unet"), ("efficientnet-b0", "psp")],
)
def test_segmenter_encoder_keys_equal_classifier_encoder_keys(arch, decoder):
    classifier_state = build_classifier(arch).state_dict()
    classifier_keys = {k: v.shape for k, v in classifier_state.items() if k.startswith("encoder.")}
    assert set(classifier_state) - set(classifier_keys) == {"head.fc.weight", "head.fc.bias"}
    segmenter = build_segmenter(arch, decoder, decoder_channels=(32, 16, 16, 8, 8), psp_channels=16)
    seg_keys = {k: v.shape for k, v in segmenter.state_dict().items() if k.startswith("encoder.")}
    assert seg_keys == classifier_keys


@pytest.mark.parametrize("decoder", ["unet", "psp"])
def test_segmenter_logits_come_back_at_input_resolution(decoder):
    segmenter = build_segmenter("resnet10", decoder, out_channels=3, psp_channels=16, **SMALL_UNET).eval()
    with torch.no_grad():
        y = segmenter(torch.randn(2, 1, 64, 96))
    assert y.shape == (2, 3, 64, 96)
    assert torch.isfinite(y).all()


def test_psp_trains_with_a_batch_of_one():
    segmenter = build_segmenter("densenet_tiny", "psp", psp_channels=16).train()
    segmenter(torch.randn(1, 1, 64, 64)).mean().backward()
    unused = [n for n, p in segmenter.named_parameters() if p.grad is None]
    assert unused == []  # every encoder stage feeds the PSP decoder (no unused parameters under DDP)


def test_input_size_not_divisible_by_32_gives_a_clear_message():
    segmenter = build_segmenter("densenet_tiny", **SMALL_UNET)
    with pytest.raises(ValueError) as err:
        segmenter(torch.zeros(1, 1, 70, 64))
    assert str(err.value) == "input size 70x64 is not divisible by 32; resize or pad it (e.g. DivisiblePadd(k=32))"


def test_wrong_channel_count_and_rank_are_reported():
    segmenter = build_segmenter("densenet_tiny", **SMALL_UNET)
    with pytest.raises(ValueError, match=r"expected 1 input channel\(s\), got 3 \(shape \[1, 3, 64, 64\]\)"):
        segmenter(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected a \(B, C, H, W\) input, got shape \[1, 64, 64\]"):
        segmenter(torch.zeros(1, 64, 64))
    # An 8-bit image failed in the first conv with "expected scalar type Byte but found Float".
    with pytest.raises(ValueError, match=r"expected a floating-point image in \[0, 1\], got an integer tensor"):
        segmenter(torch.zeros(1, 1, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"expected a torch tensor \(B, C, H, W\); a numpy image is torch.from_numpy\(x\)"):
        segmenter(torch.zeros(1, 1, 64, 64).numpy())


def test_unknown_decoder_and_bad_decoder_channels_are_rejected():
    with pytest.raises(ValueError, match=r"unknown decoder 'fpn'; expected one of \['unet', 'psp'\]"):
        build_segmenter("densenet_tiny", "fpn")
    with pytest.raises(ValueError, match=r"decoder_channels needs 5 entries"):
        build_segmenter("densenet_tiny", decoder_channels=(16, 8))
