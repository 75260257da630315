"""Every explainer must point at the planted evidence, per target, with the contract's shapes."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion

from cxrdoll.explain import build_explainer, find_target_layer
from cxrdoll.explain.occlusion import window_starts
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


def test_occlusion_matches_captum_when_windows_tile_the_image():
    torch.manual_seed(0)
    model = SquareDetector()
    images = planted_images(2) + 0.05 * torch.rand(2, 1, SIZE, SIZE)
    assert window_starts(SIZE, 8, 4)[-1] == SIZE - 8  # exact tiling: captum covers every pixel too
    maps = build_explainer("occlusion", model, window=8, stride=4, max_batch=10).attribute(images, [[0, 1], [1]])
    ref = Occlusion(model)
    for k, tgt in enumerate([[0, 1], [1]]):
        for j, cls in enumerate(tgt):
            expected = ref.attribute(images[k : k + 1], sliding_window_shapes=(1, 8, 8), strides=(1, 4, 4),
                                     baselines=0.0, target=cls)[0, 0]
            torch.testing.assert_close(maps[k][j], expected, rtol=1e-5, atol=1e-5)


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


def test_out_of_range_target_is_rejected():
    for name in OPTIONS:
        with pytest.raises(ValueError, match=r"target index \[5\] out of range for a model with 2 outputs"):
            build_explainer(name, SquareDetector()).attribute(planted_images(1), [[5]])


@pytest.mark.parametrize("name", ["gradcam", "gradcampp"])
def test_cam_of_a_batch_equals_cam_of_each_image(name):
    model = SquareDetector()
    images = planted_images(3)
    images[1] *= 0.9  # different scores per image, so a score broadcast across images would show
    explainer = build_explainer(name, model, max_batch=3)
    batched = explainer.attribute(images, [[0], [0], [0]])
    for k in range(3):
        torch.testing.assert_close(batched[k], explainer.attribute(images[k : k + 1], [[0]])[0])
