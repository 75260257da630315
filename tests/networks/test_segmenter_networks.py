"""Segmenters: shared encoder keys with the classifier, output geometry, and clear input errors."""

from __future__ import annotations

import numpy as np
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


def test_psp_logits_are_upsampled_bilinearly_with_half_pixel_centres():
    """Reference: scipy's grid-mode linear zoom of the stride-8 logits, as for the PSP fuse stage."""
    from scipy import ndimage

    torch.manual_seed(0)
    segmenter = build_segmenter("densenet_tiny", "psp", out_channels=2, psp_channels=16).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        coarse = segmenter.head(segmenter.decoder(segmenter.encoder(x)))[0].double().numpy()
        y = segmenter(x)[0]
    assert segmenter.output_stride == 8 and coarse.shape[-1] == 8
    up = np.stack([ndimage.zoom(c, 8, order=1, grid_mode=True, mode="nearest") for c in coarse])
    np.testing.assert_allclose(y.numpy(), up, atol=1e-5)


def test_a_three_channel_segmenter_takes_three_channel_images():
    segmenter = build_segmenter("resnet10", in_channels=3, out_channels=2, **SMALL_UNET)
    assert segmenter.in_channels == 3
    assert segmenter(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)


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


def _features(channels=(4, 8, 12, 16, 32), size=64, batch=1):
    """Encoder-like maps at strides 2, 4, 8, 16 and 32."""
    torch.manual_seed(0)
    return [torch.randn(batch, c, size // 2 ** (i + 1), size // 2 ** (i + 1)) for i, c in enumerate(channels)]


def test_unet_decoder_stages_halve_before_each_skip_and_keep_the_last_width():
    """FlexibleUNet's layout: every stage's 1x1 pre-conv halves its input except the last (no skip there)."""
    from cxrdoll.networks.decoders import UNetDecoder

    decoder = UNetDecoder((4, 8, 12, 16, 32), (16, 8, 8, 4, 4)).eval()
    # (in, reduced, skip + reduced, out) per stage, worked out by hand
    expected = [(32, 16, 16 + 16, 16), (16, 8, 12 + 8, 8), (8, 4, 8 + 4, 8), (8, 4, 4 + 4, 4), (4, 4, 0 + 4, 4)]
    got = [(s.reduce.in_channels, s.reduce.out_channels, s.convs[0].conv.in_channels, s.convs[1].conv.out_channels)
           for s in decoder.stages]
    assert got == expected
    with torch.no_grad():
        assert decoder(_features()).shape == (1, 4, 64, 64)


def test_unet_stage_upsamples_nearest_and_puts_the_skip_map_first():
    """Reference: 1x1 conv, each pixel copied to a 2x2 block, [skip, upsampled] along channels, the two convs."""
    from cxrdoll.networks.decoders import DecoderStage

    torch.manual_seed(1)
    stage = DecoderStage(in_channels=6, skip_channels=2, out_channels=4, halves=True, dropout=0.0).eval()
    x, skip = torch.randn(1, 6, 3, 5), torch.randn(1, 2, 6, 10)
    with torch.no_grad():
        reduced = torch.nn.functional.conv2d(x, stage.reduce.weight, stage.reduce.bias)
        up = reduced.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        expected = stage.convs(torch.cat([skip, up], dim=1))
        assert torch.allclose(stage(x, skip), expected, atol=1e-6)


def test_pyramid_pooling_pools_to_1_2_3_and_6_and_upsamples_with_half_pixel_centres():
    from cxrdoll.networks.decoders import PyramidPooling

    ppm = PyramidPooling(8)
    assert ppm.bins == [1, 2, 3, 6] and ppm.out_channels == 8 + 4 * 2  # 8 // 4 = 2 channels per bin
    assert PyramidPooling(2).out_channels == 2 + 4 * 1  # 2 // 4 = 0: still one channel per bin
    # one bin of 2x2 whose 1x1 conv passes its channel through: the block means, upsampled to 4x4
    ppm = PyramidPooling(1, bins=(2,))
    branch = ppm.branches[0].conv
    with torch.no_grad():
        branch.weight.fill_(1.0)
        branch.bias.zero_()
        x = torch.arange(16.0).reshape(1, 1, 4, 4)
        y = ppm(x)
    means = np.array([[2.5, 4.5], [10.5, 12.5]])  # 2x2 block means of 0..15
    # align_corners=False: output pixel i reads source (i + 0.5) / 2 - 0.5, clamped to the edge
    up = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert torch.equal(y[0, 0], x[0, 0])
    np.testing.assert_allclose(y[0, 1].numpy(), up @ means @ up.T, atol=1e-5)


@pytest.mark.parametrize("decoder", ["unet", "psp"])
def test_every_decoder_stage_output_passes_through_its_adapter_slot(decoder):
    """add_adapters fills each stage's slot: a stage that skipped it would leave its adapter untrained."""
    segmenter = build_segmenter("densenet_tiny", decoder, psp_channels=16, **SMALL_UNET).eval()
    called = []
    for i, stage in enumerate(segmenter.decoder.stages):
        stage.adapter.register_forward_hook(lambda module, args, out, i=i: called.append(i))
    with torch.no_grad():
        segmenter(torch.zeros(1, 1, 64, 64))
    assert called == list(range(len(segmenter.decoder.stages)))


@pytest.mark.parametrize("decoder", ["unet", "psp"])
def test_the_decoder_dropout_reaches_the_decoder_convolutions(decoder):
    segmenter = build_segmenter("densenet_tiny", decoder, psp_channels=16, dropout=0.3, **SMALL_UNET)
    first = segmenter.decoder.stages[0]
    assert [m.p for m in first.modules() if isinstance(m, torch.nn.Dropout)] != []
    assert {m.p for m in first.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}


def test_psp_fuse_stage_upsamples_the_context_bilinearly_and_puts_it_before_the_stride_8_map():
    """Reference: bilinear upsampling with half-pixel centres (scipy's grid-mode zoom), [context, skip], the conv."""
    from scipy import ndimage

    from cxrdoll.networks.decoders import FuseStage

    torch.manual_seed(2)
    stage = FuseStage(in_channels=3, skip_channels=2, out_channels=4, dropout=0.0).eval()
    x, skip = torch.randn(1, 3, 2, 3), torch.randn(1, 2, 8, 12)
    up = np.stack([ndimage.zoom(c.numpy().astype(np.float64), 4, order=1, grid_mode=True, mode="nearest") for c in x[0]])
    with torch.no_grad():
        expected = stage.fuse(torch.cat([torch.from_numpy(up).float()[None], skip], dim=1))
        assert torch.allclose(stage(x, skip), expected, atol=1e-5)
        with pytest.raises(ValueError, match="FuseStage needs the stride-8 encoder map"):
            stage(x, None)


def test_unet_decoder_computes_what_monais_flexible_unet_decoder_computes():
    """Reference: MONAI's UNetDecoder with FlexibleUNet's defaults (batch norm eps 1e-3 and momentum 0.1, no conv
    bias, nearest upsampling after a 1x1 pre-conv), given the same weights and batch-norm statistics: same output
    in eval mode, same running statistics after a training step. MONAI has no pre-conv where it would keep the
    width (the last stage); ours, set to the identity there, then computes the same. Last two widths differ, so
    out_channels is the last one's."""
    import inspect

    from monai.networks.nets import FlexibleUNet
    from monai.networks.nets.flexible_unet import UNetDecoder as MonaiUNetDecoder

    from cxrdoll.networks.decoders import UNetDecoder

    defaults = {k: p.default for k, p in inspect.signature(FlexibleUNet).parameters.items()}
    encoder_channels, decoder_channels = (4, 8, 12, 16, 32), (16, 8, 8, 6, 4)
    torch.manual_seed(3)
    reference = MonaiUNetDecoder(
        2, (1, *encoder_channels), decoder_channels, act=defaults["act"], norm=defaults["norm"],
        dropout=defaults["dropout"], bias=defaults["decoder_bias"], upsample=defaults["upsample"],
        pre_conv=defaults["pre_conv"], interp_mode=defaults["interp_mode"], align_corners=None, is_pad=defaults["is_pad"])
    ours = UNetDecoder(encoder_channels, decoder_channels)
    theirs = reference.state_dict()
    for name, value in theirs.items():  # statistics far from (0, 1), so eps and the stored values count
        if name.endswith("running_var"):
            value.copy_(torch.rand_like(value) * 1e-3 + 1e-4)
        elif name.endswith("running_mean"):
            value.normal_()
    last = ours.stages[-1].reduce
    with torch.no_grad():
        last.weight.copy_(torch.eye(last.in_channels)[:, :, None, None])
        last.bias.zero_()
    mapped = [k for k in ours.state_dict() if not k.startswith(f"stages.{len(ours.stages) - 1}.reduce.")]
    assert [ours.state_dict()[k].shape for k in mapped] == [v.shape for v in theirs.values()]
    ours.load_state_dict(dict(zip(mapped, theirs.values())), strict=False)
    features = _features(encoder_channels, batch=2)
    with torch.no_grad():
        expected = reference.eval()([torch.zeros(2, 1, 64, 64), *features], skip_connect=4)
        assert ours.out_channels == expected.shape[1] == 4
        torch.testing.assert_close(ours.eval()(features), expected, rtol=1e-4, atol=1e-4)
        reference.train()([torch.zeros(2, 1, 64, 64), *features], skip_connect=4)
        ours.train()(features)
    for name, b in zip(mapped, reference.state_dict().values()):
        torch.testing.assert_close(ours.state_dict()[name], b, rtol=1e-5, atol=1e-5, msg=name)
