"""The classifier zoo: every registered architecture builds, and encoders honour the stride contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks import nets

from cxrdoll.networks import (
    CLASSIFIER_NAMES,
    ENCODERS,
    PAPER_CLASSIFIER_NAMES,
    STRIDES,
    build_classifier,
    build_encoder,
    checked_image_size,
)


def test_zoo_has_the_papers_seventeen_plus_architectures():
    assert len(PAPER_CLASSIFIER_NAMES) >= 17
    assert {"densenet121", "resnet18", "seresnext50", "efficientnet-b0"} <= set(PAPER_CLASSIFIER_NAMES)
    assert set(CLASSIFIER_NAMES) == set(ENCODERS)
    assert CLASSIFIER_NAMES[:len(PAPER_CLASSIFIER_NAMES)] == PAPER_CLASSIFIER_NAMES  # the paper's zoo first
    # the two small members for CPU runs are not the paper's
    assert set(CLASSIFIER_NAMES) - set(PAPER_CLASSIFIER_NAMES) == {"resnet10", "densenet_tiny"}


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


def test_every_registered_classifier_gives_14_logits_per_image_down_to_the_smallest_accepted_side():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    smallest = checked_image_size(STRIDES[-1])
    for name in CLASSIFIER_NAMES:
        model = build_classifier(name).eval()
        with torch.no_grad():
            logits = model(x)
            assert model(x[..., :smallest, :smallest]).shape == (2, 14), name
        assert logits.shape == (2, 14), name
        assert torch.isfinite(logits).all(), name
        assert model.encoder.strides == list(STRIDES), name
        if name in REFERENCE_CHANNELS:
            assert model.encoder.out_channels == REFERENCE_CHANNELS[name], name


def test_classifier_names_an_unbatched_integer_or_wrong_channel_input():
    """As the segmenter does: a loader's (1, H, W) image failed in a batch norm with "expected 4D input
    (got 3D input)", a uint8 one with "expected scalar type Byte but found Float"."""
    model = build_classifier("resnet10").eval()
    image = torch.rand(1, 64, 64)
    with pytest.raises(ValueError, match=r"expected a \(B, C, H, W\) input, got shape \[1, 64, 64\] \(one image: x\[None\]\)"):
        model(image)
    with pytest.raises(ValueError, match=r"expected 1 input channel\(s\), got 3 \(shape \[1, 3, 64, 64\]\)"):
        model(image.expand(3, -1, -1)[None])
    with pytest.raises(ValueError, match=r"expected a floating-point image in \[0, 1\], got an integer tensor"):
        model((image[None] * 255).to(torch.uint8))
    with pytest.raises(TypeError, match=r"expected a torch tensor \(B, C, H, W\); a numpy image is torch.from_numpy\(x\)"):
        model(image[None].numpy())
    with torch.no_grad():
        assert model(image[None]).shape == (1, 14)


def test_train_mode_reaches_every_module_whatever_modes_its_parts_were_left_in():
    """``Classifier.train`` skips the walk when every module is in the mode asked for (MONAI's trainer
    asks each iteration); a part left in the other mode must still be switched."""
    net = build_classifier("resnet10")
    modes = lambda: {m.training for m in net.modules()}  # noqa: E731
    assert net.eval() is net and modes() == {False}
    net.encoder.train()
    assert net.eval() is net and modes() == {False}
    net.head.dropout.train()
    assert net.train() is net and modes() == {True}
    net.encoder.eval()
    assert net.train() is net and modes() == {True}
    assert net.train() is net and modes() == {True}


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
    assert build_encoder("densenet_tiny", init_features=8).out_channels[0] == 8  # over the registry's 16


def test_the_classifier_dropout_acts_on_the_pooled_features_in_training_only():
    """At rate 1 every pooled feature is dropped in training, leaving the linear layer's bias."""
    torch.manual_seed(0)
    model = build_classifier("resnet10", num_classes=2, dropout=1.0)
    x = torch.rand(2, 1, 64, 64)
    bias = model.head.fc.bias.detach().expand(2, -1)
    with torch.no_grad():
        assert torch.equal(model.train()(x), bias)
        assert not torch.equal(model.eval()(x), bias)


def test_an_encoder_whose_stages_do_not_reach_stride_32_is_refused():
    from cxrdoll.networks import FeatureEncoder

    stages = [torch.nn.Conv2d(1, 1, 1, stride=s) for s in (2, 2, 2, 2, 1)]
    with pytest.raises(ValueError, match=r"encoder stages have strides \[2, 4, 8, 16, 16\], expected \[2, 4, 8, 16, 32\]"):
        FeatureEncoder(stages, 1)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(KeyError, match=r"unknown network 'densenet122'; expected one of \[.*'densenet121'"):
        build_classifier("densenet122")


@pytest.mark.parametrize(
    ("name", "reference", "fc"),
    [
        ("densenet_tiny", lambda: nets.DenseNet(2, 1, 14, 16, 8, (2, 2, 2, 2), bn_size=2), "class_layers.out"),
        ("resnet10", lambda: nets.resnet10(spatial_dims=2, n_input_channels=1, num_classes=14, conv1_t_stride=2), "fc"),
        ("seresnet50", lambda: nets.SEResNet50(spatial_dims=2, in_channels=1, num_classes=14), "last_linear"),
        (
            "efficientnet-b0",
            lambda: nets.EfficientNetBN("efficientnet-b0", pretrained=False, in_channels=1, num_classes=14),
            "_fc",
        ),
    ],
)
def test_classifier_computes_the_same_logits_as_the_monai_network(name, reference, fc):
    """Cutting a MONAI net into stages must not drop or reorder a layer: same weights, same logits."""
    ours = build_classifier(name).eval()
    theirs = reference().eval()
    # Stages keep MONAI's module order, so the two state_dicts pair up entry by entry.
    their_body = [(k, v) for k, v in theirs.state_dict().items() if not k.startswith(fc + ".")]
    our_body = [k for k in ours.state_dict() if k.startswith("encoder.")]
    assert len(our_body) == len(their_body)
    mapped = {ours_key: value for ours_key, (_, value) in zip(our_body, their_body)}
    mapped.update({f"head.fc.{k}": v for k, v in theirs.get_submodule(fc).state_dict().items()})
    ours.load_state_dict(mapped, strict=True)  # also checks every shape
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["densenet_tiny", "resnet10"])
def test_measuring_the_stages_leaves_a_fresh_network_in_training_mode_with_untouched_statistics(name):
    """The build probes each stage on a blank image: in training mode it would move every batch norm's
    running statistics off their initial 0 and 1 before training, and left in eval mode a loop that
    does not call train() itself would train with frozen statistics."""
    from cxrdoll.networks import build_segmenter

    for model in (build_classifier(name), build_segmenter(name, decoder_channels=(32, 16, 16, 8, 8))):
        assert all(m.training for m in model.modules())
        norms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms
        for m in norms:
            assert int(m.num_batches_tracked) == 0
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))


def test_efficientnet_encoders_use_the_scriptable_swish():
    """MONAI's memory-efficient swish is a custom autograd function that torch.jit.script rejects."""
    from monai.networks.blocks.activation import MemoryEfficientSwish

    swishes = [m for m in build_encoder("efficientnet-b0").modules() if "Swish" in type(m).__name__]
    assert swishes and not any(isinstance(m, MemoryEfficientSwish) for m in swishes)


def test_efficientnet_batch_norm_statistics_follow_the_data_within_a_short_schedule():
    """MONAI's TF-style momentum 0.01 left running statistics near their init after a short from-scratch
    training, so eval-mode outputs were at chance; ours use 0.1 like every other encoder."""
    encoder = build_encoder("efficientnet-b0", in_channels=1).train()
    first_bn = next(m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        for _ in range(20):
            stem_out = encoder.stages[0].stem(encoder.stages[0].stem_padding(torch.full((2, 1, 32, 32), 3.0)))
            encoder(torch.full((2, 1, 32, 32), 3.0))
    batch_mean = stem_out.mean(dim=(0, 2, 3))
    # 20 updates at momentum 0.1 cover 88 % of the way to the batch mean; at 0.01 only 18 %.
    assert torch.allclose(first_bn.running_mean, batch_mean, rtol=0.15, atol=1e-3)


@pytest.mark.parametrize(("value", "whole_strides", "expected"), [
    (320, False, 320), ("224", False, 224), (64.0, False, 64), (300, False, 300), (288, True, 288), (" 96", True, 96),
    (np.int64(256), True, 256),
    (32, True, 32),  # the smallest side: one pixel at stride 32
])
def test_image_size_check_accepts_whole_pixel_counts(value, whole_strides, expected):
    assert checked_image_size(value, whole_strides=whole_strides) == expected


@pytest.mark.parametrize(("value", "whole_strides", "message"), [
    (0, False, "image size 0 px is below 32 px, the smallest side the networks take (they downsample 32x)"),
    (-5, False, "image size -5 px is below 32 px"), ("-64", False, "image size -64 px is below 32 px"),
    (20, True, "image size 20 px is below 32 px"),
    (300, True, "image size 300 px is not a multiple of 32 px, which the segmentation network needs for its skip "
                "connections to line up (try 288 or 320)"),
    (64.5, False, "image size 64.5 is not a whole number of pixels"),
    ("abc", False, "image size 'abc' is not a whole number of pixels"),
    (True, False, "image size True is not a whole number of pixels"),
    (None, False, "image size None is not a whole number of pixels"),
])
def test_image_size_check_says_what_the_networks_take(value, whole_strides, message):
    with pytest.raises(ValueError) as err:
        checked_image_size(value, whole_strides=whole_strides)
    assert str(err.value).startswith(message)
