"""TorchScript export (what ckpt_export does) and channels_last execution."""

from __future__ import annotations

import pytest
import torch

from cxrdoll.networks import add_adapters, build_classifier, build_segmenter


def test_scripted_segmenter_with_adapters_round_trips_through_a_file(tmp_path):
    torch.manual_seed(0)
    segmenter = build_segmenter("resnet10", "unet", out_channels=3, decoder_channels=(32, 16, 16, 8, 8))
    add_adapters(segmenter)
    segmenter.eval()
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(segmenter), str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), segmenter(x))
    # TorchScript re-raises the ValueError as torch.jit.Error, keeping the message
    with pytest.raises(torch.jit.Error, match="input size 48x64 is not divisible by 32"):
        loaded(torch.zeros(1, 1, 48, 64))


def test_traced_classifier_round_trips(tmp_path):
    torch.manual_seed(0)
    classifier = build_classifier("densenet_tiny").eval()
    x = torch.randn(2, 1, 64, 64)
    path = tmp_path / "classifier.ts"
    torch.jit.save(torch.jit.trace(classifier, x), str(path))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(x), classifier(x))


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    segmenter = build_segmenter("densenet_tiny", "psp", psp_channels=16).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        reference = segmenter(x)
        segmenter = segmenter.to(memory_format=torch.channels_last)
        out = segmenter(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_segmenter_compiles_as_one_graph():
    """``torch.compile(fullgraph=True)`` fails on any graph break (the bundles' compile option relies on it)."""
    torch.manual_seed(0)
    segmenter = build_segmenter("densenet_tiny", "unet", decoder_channels=(16, 16, 8, 8, 8))
    add_adapters(segmenter)
    segmenter.eval()
    compiled = torch.compile(segmenter, backend="aot_eager", fullgraph=True)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), segmenter(x))
