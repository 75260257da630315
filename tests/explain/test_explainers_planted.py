"""Every explainer must point at the planted evidence, per target, with the contract's shapes."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from captum.attr import Occlusion

from cxrdoll.explain import build_explainer, find_target_layer
from cxrdoll.explain.occlusion import window_starts
from cxrdoll.networks import build_classifier
from tests.explain.planted import BRIGHT, DARK, SIZE, SquareDetector, planted_images, square_mask

OPTIONS = {
    "ig": {"steps": 16, "baseline": "mean", "max_batch": 8},
    "gradcam": {},
    "gradcampp": {},
    "occlusion": {"window": 4, "stride": 2, "baseline": "mean", "max_batch": 64},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_maps_peak_on_the_planted_square_of_each_target(name):
    model = SquareDetector()
    images = planted_images(2)
    targets = [[0, 1], [1]]
    maps = build_explainer(name, model, **OPTIONS[name]).attribute(images, targets)

    assert [tuple(m.shape) for m in maps] == [(2, SIZE, SIZE), (1, SIZE, SIZE)]
    assert all(m.dtype == torch.float32 for m in maps)
    for k, tgt in enumerate(targets):
        for j, cls in enumerate(tgt):
            where = square_mask(BRIGHT if cls == 0 else DARK, shift=k)
            m = maps[k][j]
            peak = divmod(int(m.argmax()), SIZE)
            assert where[peak], f"{name}: image {k} class {cls} peaks at {peak}, outside its square"
            positive = m.clamp(min=0)
            assert positive[where].sum() >= 0.9 * positive.sum(), f"{name}: evidence leaks outside the square"


def test_target_layer_is_found_and_can_be_given():
    model = SquareDetector()
    assert find_target_layer(model, planted_images(1)) == "act"
    assert not any(m._forward_hooks for m in model.modules())  # its recording hooks are gone
    explainer = build_explainer("gradcam", model)
    explainer.attribute(planted_images(1), [[0]])
    assert explainer.target_layer == "act"
    with pytest.raises(ValueError, match="target_layer 'nope' is not a module of the model"):
        build_explainer("gradcam", model, target_layer="nope")


def test_target_layer_of_monai_densenet_is_the_last_feature_map():
    from monai.networks.nets import DenseNet

    # DenseNet121's layout (features..., class_layers.relu/pool/flatten/out), made small
    model = DenseNet(spatial_dims=2, in_channels=1, out_channels=14, init_features=8, growth_rate=4,
                     block_config=(2, 2, 2, 2), bn_size=2)
    assert find_target_layer(model, torch.rand(1, 1, 64, 64)) == "class_layers.relu"


def test_target_layer_of_a_project_classifier_is_the_encoder_output():
    from cxrdoll.networks import build_classifier

    model = build_classifier("densenet_tiny")
    assert find_target_layer(model, torch.rand(1, 1, 64, 64)) == "encoder.stages.4"


@pytest.mark.parametrize(("width", "window", "stride", "options", "captum_window", "captum_baseline"), [
    (SIZE, 8, 4, {}, (8, 8), 0.0),
    (SIZE, 8, 8, {"baseline": "mean", "baseline_value": 0.3}, (8, 8), 0.3),  # stride = window: no overlap
    (SIZE + 16, 40, 8, {}, (SIZE, 40), 0.0),  # a window taller than the image is clipped to its height only
])
def test_occlusion_matches_captum_when_windows_tile_the_image(width, window, stride, options, captum_window,
                                                              captum_baseline):
    torch.manual_seed(0)
    model = SquareDetector()
    images = torch.nn.functional.pad(planted_images(2), (0, width - SIZE), value=0.5)
    images += 0.05 * torch.rand(2, 1, SIZE, width)
    for size, side in zip((SIZE, width), captum_window):  # exact tiling: captum covers every pixel too
        assert window_starts(size, side, stride)[-1] == size - side
    maps = build_explainer("occlusion", model, window=window, stride=stride, max_batch=10,
                           **options).attribute(images, [[0, 1], [1]])
    ref = Occlusion(model)
    for k, tgt in enumerate([[0, 1], [1]]):
        for j, cls in enumerate(tgt):
            expected = ref.attribute(images[k : k + 1], sliding_window_shapes=(1, *captum_window),
                                     strides=(1, stride, stride), baselines=captum_baseline, target=cls)[0, 0]
            torch.testing.assert_close(maps[k][j], expected, rtol=1e-5, atol=1e-5)


def test_occlusion_of_a_colour_image_is_captums_map_summed_over_channels():
    """The window occludes every channel at once: captum gives each channel the whole drop, so the
    channel sum is C times one channel's map, not the map itself."""
    torch.manual_seed(0)
    mix = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        mix.weight.copy_(torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1))
        mix.bias.zero_()
    model = torch.nn.Sequential(mix, SquareDetector())
    images = planted_images(1).repeat(1, 3, 1, 1) + 0.05 * torch.rand(1, 3, SIZE, SIZE)
    got = build_explainer("occlusion", model, window=8, stride=4, max_batch=10).attribute(images, [[0]])[0][0]
    expected = Occlusion(model).attribute(images, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0.0,
                                          target=0)[0].sum(0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_window_starts_cover_the_edge():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]


def test_unknown_explainer_and_bad_option_are_named():
    with pytest.raises(ValueError, match="unknown explainer 'lime'"):
        build_explainer("lime", SquareDetector())
    with pytest.raises(ValueError, match="explainer 'occlusion': .*steps"):
        build_explainer("occlusion", SquareDetector(), steps=3)
    with pytest.raises(ValueError, match="occlusion stride 8 is larger than its window 4"):
        build_explainer("occlusion", SquareDetector(), window=4, stride=8)
    for name in OPTIONS:
        with pytest.raises(ValueError, match="max_batch must be >= 1"):
            build_explainer(name, SquareDetector(), max_batch=0)
    with pytest.raises(ValueError, match="unknown baseline 'noise'"):  # when built, not mid-run
        build_explainer("occlusion", SquareDetector(), baseline="noise")


def test_out_of_range_target_is_rejected():
    """Class K of a K-output model too (IG would take it for an unused slot: a zero map), and outputs that
    are not (N, K) logits, such as a head without its flatten. The failed call leaves the model's modes and
    ``requires_grad`` as they were."""
    unflattened = torch.nn.Sequential(SquareDetector(), torch.nn.Unflatten(1, (2, 1, 1)))
    for name in OPTIONS:
        model = SquareDetector().train()
        for bad in (5, 2):
            with pytest.raises(ValueError, match=rf"target index \[{bad}\] out of range for a model with 2 outputs"):
                build_explainer(name, model).attribute(planted_images(1), [[bad]])
        assert all(m.training for m in model.modules()) and all(p.requires_grad for p in model.parameters()), name
        with pytest.raises(ValueError, match=r"must return logits of shape \(N, num_classes\), got \(\d+, 2, 1, 1\)"):
            build_explainer(name, unflattened).attribute(planted_images(1), [[0]])


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_inputs_an_explainer_would_misread_are_refused(name):
    """captum's ``target=1`` habit (a flat list) and non-integer indices are named; ``int()`` used to
    read 1.7 as class 1 and True as class 1, explaining a class nobody asked for. Integer images too."""
    explainer = build_explainer(name, SquareDetector(), **OPTIONS[name])
    images = planted_images(2)
    with pytest.raises(ValueError, match=r"one list of class indices per image.*got the flat list \[1, 0\]"):
        explainer.attribute(images, [1, 0])
    with pytest.raises(ValueError, match=r"one list of class indices per image.*got 1"):
        explainer.attribute(images[:1], 1)
    for bad in (1.7, True, "Cardiomegaly"):
        with pytest.raises(ValueError, match=rf"image 1: target {bad!r} is not a class index"):
            explainer.attribute(images, [[0], [bad]])
    # A 0-d tensor is an index only if integer: int() would read tensor(1.7) and tensor(True) as class 1.
    for bad in (torch.tensor(1.7), torch.tensor(True)):
        with pytest.raises(ValueError, match=rf"image 1: target {re.escape(repr(bad))} is not a class index"):
            explainer.attribute(images, [[0], [bad]])
    # -1 would explain the last class (occlusion), or nothing (IG's unused slot)
    with pytest.raises(ValueError, match=r"image 1: negative target index in \[-1\]"):
        explainer.attribute(images, [[0], [-1]])
    # 8-bit pixels were cast to float and explained as 0..255 without an error; other integer images likewise.
    with pytest.raises(ValueError, match=r"images must be floating point.*got uint8 \(8-bit: images.float\(\) / 255\)"):
        explainer.attribute((images * 255).to(torch.uint8), [[0], [1]])
    with pytest.raises(ValueError, match=r"images must be floating point.*got int64"):
        explainer.attribute(images.long(), [[0], [1]])
    with pytest.raises(ValueError, match=r"images must be a tensor \(B, C, H, W\), got \(1, 2, 1, 32, 32\)"):
        explainer.attribute(images[None], [[0]])
    # Integer-valued numpy and tensor indices stay accepted.
    maps = explainer.attribute(images, [np.array([1]), torch.tensor([0, 1])])
    assert [tuple(m.shape) for m in maps] == [(1, SIZE, SIZE), (2, SIZE, SIZE)]


@pytest.mark.parametrize("name", ["gradcam", "gradcampp"])
def test_cam_of_a_batch_equals_cam_of_each_image(name):
    model = SquareDetector()
    images = planted_images(3)
    images[1] *= 0.9  # different scores per image, so a score broadcast across images would show
    explainer = build_explainer(name, model, max_batch=3)
    targets = [[0], [0, 1], [0]]  # class 1 only as a second target
    batched = explainer.attribute(images, targets)
    for k, tgt in enumerate(targets):
        for j, cls in enumerate(tgt):
            torch.testing.assert_close(batched[k][j], explainer.attribute(images[k : k + 1], [[cls]])[0][0])


def test_gradcam_is_selvarajus_map_of_the_class_logit():
    """Selvaraju et al. (2017), eq. 1-2: channel weights are the spatial mean of the logit's gradient,
    the map the ReLU of the weighted channel sum, here upsampled bilinearly and not normalised.
    Grad-CAM++ weights (alpha-weighted positive gradients) give another map on a real network."""
    torch.manual_seed(0)
    model = build_classifier("resnet10").eval()
    image = torch.rand(1, 1, 128, 128)
    got = build_explainer("gradcam", model).attribute(image, [[2]])[0][0]
    acts = {}
    handle = dict(model.named_modules())["encoder.stages.4"].register_forward_hook(lambda m, i, o: acts.update(a=o))
    score = model(image)[:, 2]
    handle.remove()
    (g,) = torch.autograd.grad(score.sum(), acts["a"])
    weights = g.mean((2, 3), keepdim=True)
    cam = torch.relu((weights * acts["a"]).sum(1, keepdim=True))
    want = torch.nn.functional.interpolate(cam, size=(128, 128), mode="bilinear", align_corners=False)[0, 0].detach()
    assert want.max() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.max()))


def _closed_form_gradcampp(model, layer: str, image: torch.Tensor, cls: int) -> torch.Tensor:
    """Chattopadhyay et al. (2018), eq. 19 with Y = exp(S), written out with autograd."""
    acts = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.update(a=o))
    score = model(image)[:, cls]
    handle.remove()
    a = acts["a"]
    (g,) = torch.autograd.grad(score.sum(), a)
    denominator = 2 * g**2 + (a * g**3).sum((2, 3), keepdim=True)
    alpha = torch.where(denominator != 0, g**2 / denominator, torch.zeros_like(g))
    weights = (alpha * torch.relu(score.exp().view(-1, 1, 1, 1) * g)).sum((2, 3), keepdim=True)
    cam = torch.relu((weights * a).sum(1, keepdim=True))
    return torch.nn.functional.interpolate(cam, size=image.shape[2:], mode="bilinear", align_corners=False)[0, 0]


def test_gradcampp_is_the_papers_closed_form_at_full_size():
    # At 256 px behind average pooling the gradients are ~1e-4: MONAI's fixed 1e-7 in alpha's
    # denominator would dominate it (relative L2 about 0.4 here).
    torch.manual_seed(0)
    model = build_classifier("resnet10").eval()
    image = torch.rand(1, 1, 256, 256)
    got = build_explainer("gradcampp", model).attribute(image, [[2]])[0][0]
    want = _closed_form_gradcampp(model, "encoder.stages.4", image, 2).detach()
    torch.testing.assert_close(got / got.max(), want / want.max(), atol=1e-4, rtol=1e-3)


def test_gradcampp_of_a_large_logit_is_the_same_map():
    """exp(S) overflows past S = 88 and vanishes below -104: the map must not depend on it."""
    model, images = SquareDetector(), planted_images(1)
    explainer = build_explainer("gradcampp", model)
    reference = explainer.attribute(images, [[0]])[0]
    for shift in (95.0, -110.0):
        with torch.no_grad():
            model.head.bias[0] = shift
        torch.testing.assert_close(explainer.attribute(images, [[0]])[0], reference)


def test_gradcampp_of_a_layer_with_negative_activations_is_the_papers_closed_form():
    """The final ReLU matters where the layer's activations can be negative (a convolution before its
    activation): without it the map goes below 0 where the paper's is 0."""
    model, image = SquareDetector().eval(), planted_images(1)
    want = _closed_form_gradcampp(model, "conv", image, 0).detach()  # before MONAI hooks the model
    got = build_explainer("gradcampp", model, target_layer="conv").attribute(image, [[0]])[0][0]
    assert want.max() > 0 and (want == 0).any()
    torch.testing.assert_close(got / got.max(), want / want.max(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_the_callers_state_changes_neither_the_maps_nor_the_model(name):
    """A model mid-training with live BatchNorm, images that require grad and a ``no_grad`` block around
    the call: the maps are those of the model in eval mode, BatchNorm's running statistics are not
    updated (also not by the target-layer search), and neither the maps nor the images get a graph."""
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1), SquareDetector())
    with torch.no_grad():
        model[0].running_mean.fill_(0.1)
        model[0].running_var.fill_(0.5)
    reference_model = copy.deepcopy(model).eval()
    images, targets = planted_images(2), [[0], [1, 0]]
    want = build_explainer(name, reference_model, **OPTIONS[name]).attribute(images, targets)
    state = copy.deepcopy(model.state_dict())
    images.requires_grad_(True)
    explainer = build_explainer(name, model.train(), **OPTIONS[name])
    with torch.no_grad():
        in_no_grad = explainer.attribute(images, targets)
    for got in (in_no_grad, explainer.attribute(images, targets)):
        for g, w in zip(got, want):
            assert not g.requires_grad
            torch.testing.assert_close(g, w)
    assert model.training and images.grad is None
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=f"{key} changed")


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_explaining_leaves_modes_and_gradients_as_they_were(name):
    """A model mid-fine-tuning (frozen BatchNorm in eval, gradients accumulated) comes back unchanged."""
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1), SquareDetector())
    model.train()
    model[0].eval()
    model[1].head.weight.requires_grad_(False)
    model[1].head.bias.grad = torch.ones(2)
    build_explainer(name, model, **OPTIONS[name]).attribute(planted_images(1), [[0]])
    assert [m.training for m in model.modules()] == [True, False, True, True, True, True, True]
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, True, False, True]
    assert [None if p.grad is None else p.grad.tolist() for p in model.parameters()] == [None] * 5 + [[1.0, 1.0]]
