"""Fast IG must equal captum's IntegratedGradients (same steps, method, baseline) and be complete."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from scipy.ndimage import gaussian_filter
from torch import nn

from cxrdoll.explain import FastIntegratedGradients, build_explainer, make_baseline, quadrature

TARGETS = [[0, 3], [4], [1, 2, 0]]  # uneven on purpose: padding slots must not leak


def small_net() -> nn.Module:
    """Smooth conv net with BatchNorm, left in train mode: the explainer must use eval statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Softplus(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Tanh(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    )
    with torch.no_grad():  # non-trivial running statistics, so train/eval mode differ
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    return net.train()


def images() -> torch.Tensor:
    return torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(1))


def captum_maps(net, x, baseline, method, steps):
    net.eval()
    ig = IntegratedGradients(net)
    maps, deltas = [], []
    for i, tgt in enumerate(TARGETS):
        a, d = zip(*(ig.attribute(x[i : i + 1], baselines=baseline[i : i + 1], target=c, n_steps=steps,
                                  method=method, return_convergence_delta=True) for c in tgt))
        maps.append(torch.cat(a).sum(dim=1))
        deltas.append(torch.cat(d))
    return maps, deltas


# riemann_right: its nodes are not symmetric about 1/2, so a path walked from x to the baseline
# (alpha -> 1 - alpha) is caught; the other two rules are symmetric and cannot see it
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_right"])
@pytest.mark.parametrize("backward", ["batched", "loop"])
def test_parity_with_captum(method, backward):
    net, x = small_net(), images()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    # max_batch=5 with 7 steps: chunks straddle images
    ig = FastIntegratedGradients(net, steps=7, method=method, baseline="blurred", blur_sigma=2.0,
                                 max_batch=5, backward=backward)
    maps, deltas = ig.attribute(x, TARGETS, return_convergence_delta=True)
    assert net.training, "the model's mode must be restored"
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=f"{k} changed")

    ref_maps, ref_deltas = captum_maps(net, x, make_baseline(x, "blurred", 2.0), method, 7)
    for got, ref, d, ref_d in zip(maps, ref_maps, ref_deltas, deltas):
        assert got.shape == ref.shape
        assert ((got - ref).norm() / ref.norm()).item() <= 1e-4
        torch.testing.assert_close(d, ref_d, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("baseline", ["zeros", "mean"])
def test_completeness_gap_is_small(baseline):
    net, x = small_net(), images()
    ig = build_explainer("ig", net, steps=32, method="gausslegendre", baseline=baseline)
    maps, deltas = ig.attribute(x, TARGETS, return_convergence_delta=True)
    net.eval()
    base = make_baseline(x, baseline)
    with torch.no_grad():
        diff = net(x) - net(base)
    for i, tgt in enumerate(TARGETS):
        expected = diff[i, tgt]
        # the maps are channel sums, so their total is the attribution total
        torch.testing.assert_close(maps[i].flatten(1).sum(1) - expected, deltas[i], rtol=0, atol=1e-5)
        assert not deltas[i].requires_grad  # no graph of the end points' forward kept alive
        assert (deltas[i].abs() <= 1e-3 * expected.abs().clamp(min=1e-2)).all(), (deltas[i], expected)


def test_quadrature_is_captums():
    alphas, weights = quadrature("riemann_trapezoid", 5)
    torch.testing.assert_close(alphas, torch.linspace(0, 1, 5, dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([0.1, 0.2, 0.2, 0.2, 0.1], dtype=torch.float64))
    alphas, weights = quadrature("gausslegendre", 3)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    # 3-point Gauss-Legendre integrates x^5 on [0, 1] exactly
    torch.testing.assert_close((weights * alphas**5).sum(), torch.tensor(1 / 6, dtype=torch.float64))
    # the fewest steps each rule takes: the 1-point Gauss-Legendre rule is the midpoint rule
    for method, steps, want in (("gausslegendre", 1, ([0.5], [1.0])), ("riemann_left", 2, ([0.0, 0.5], [0.5, 0.5]))):
        torch.testing.assert_close(quadrature(method, steps), tuple(torch.tensor(v, dtype=torch.float64) for v in want))


def test_bf16_autocast_stays_close_to_fp32():
    net, x = small_net(), images()
    fp32 = FastIntegratedGradients(net, steps=8).attribute(x, TARGETS)
    bf16 = FastIntegratedGradients(net, steps=8, amp_dtype="bf16").attribute(x, TARGETS)
    for a, b in zip(fp32, bf16):
        assert b.dtype == torch.float32
        rel = ((a - b).norm() / a.norm()).item()
        assert 0 < rel < 0.1, rel  # lower precision, but the same map


def test_images_without_targets_get_empty_maps():
    """Also where a chunk of the path holds only images without targets (max_batch = steps: one image a chunk)."""
    net, x = small_net(), images()
    maps = FastIntegratedGradients(net, steps=4, max_batch=4).attribute(x, [[], [2], []])
    assert [tuple(m.shape) for m in maps] == [(0, 16, 16), (1, 16, 16), (0, 16, 16)]
    torch.testing.assert_close(maps[1], FastIntegratedGradients(net, steps=4).attribute(x[1:2], [[2]])[0])


def test_defaults_are_the_documented_ones():
    """docs/FORMATS.md, "Explainers": the options a labelling run gets when it names none."""
    ig = build_explainer("ig", small_net())
    assert (ig.steps, ig.method, ig.baseline, ig.blur_sigma, ig.baseline_value, ig.max_batch, ig.backward,
            ig.amp_dtype) == (20, "gausslegendre", "zeros", 10.0, None, 80, "loop", None)
    occlusion = build_explainer("occlusion", small_net())
    assert (occlusion.window, occlusion.stride, occlusion.baseline, occlusion.max_batch) == (32, 16, "zeros", 64)
    assert build_explainer("gradcam", small_net()).max_batch == 16


def test_amp_dtype_names():
    for value, dtype in (("BF16", torch.bfloat16), ("half", torch.float16), ("fp16", torch.float16),
                         (torch.float16, torch.float16), ("none", None), (torch.float32, None), (None, None)):
        assert FastIntegratedGradients(small_net(), amp_dtype=value).amp_dtype is dtype, value


def test_baselines():
    x = torch.rand(2, 1, 20, 20)
    const = torch.full((1, 1, 20, 20), 0.3)
    torch.testing.assert_close(make_baseline(const, "blurred", 3.0), const)  # replicate padding: no dark rim
    blurred = make_baseline(x, "blurred", 3.0)
    assert blurred.std() < x.std() / 3
    mean = make_baseline(x, "mean")
    torch.testing.assert_close(mean[1], torch.full_like(x[1], x[1].mean().item()))
    torch.testing.assert_close(make_baseline(x, "mean", value=0.25), torch.full_like(x, 0.25))
    torch.testing.assert_close(make_baseline(x, "mean", value=0.0), torch.zeros_like(x))  # 0 is a value, not None
    mean[0, 0, 0, 0] = 9.0  # a tensor of its own, not a view of one value per image
    assert mean[0, 0, 0, 1] != 9.0


def test_blurred_baseline_is_scipys_gaussian_filter():
    """Same kernel as scipy's (sampled, truncated at 4 sigma, replicate = scipy's 'nearest')."""
    x = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    for sigma in (1.5, 3.0):
        ref = np.array([[gaussian_filter(c, sigma, mode="nearest", truncate=4.0) for c in im]
                        for im in x.numpy()])
        torch.testing.assert_close(make_baseline(x, "blurred", sigma), torch.from_numpy(ref), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="blur_sigma must be > 0, got 0"):
        make_baseline(x, "blurred", 0.0)


def test_mean_baseline_is_one_value_per_image_over_all_channels():
    x = torch.zeros(2, 2, 4, 4)
    x[0, 0] = 1.0  # image 0: channel 0 all ones, channel 1 all zeros -> image mean 0.5
    x[1] = 0.2
    mean = make_baseline(x, "mean")
    torch.testing.assert_close(mean[0], torch.full((2, 4, 4), 0.5))
    torch.testing.assert_close(mean[1], torch.full((2, 4, 4), 0.2))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "simpson"}, "unknown IG method 'simpson'"),
        ({"method": "riemann_left", "steps": 1}, "needs steps >= 2, got 1"),
        ({"baseline": "noise"}, "unknown baseline 'noise'"),
        ({"backward": "vmap"}, "unknown backward mode 'vmap'"),
        ({"max_batch": 0}, "max_batch must be >= 1"),
        ({"amp_dtype": "fp8"}, "unknown AMP dtype 'fp8'"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        FastIntegratedGradients(small_net(), **options)


def test_a_baseline_of_an_image_without_its_batch_axis_is_refused():
    """A (1, H, W) image was blurred along its rows only (H read as channels); "mean" failed with
    "Dimension out of range"."""
    for kind in ("zeros", "blurred", "mean"):
        with pytest.raises(ValueError, match=r"images must be a tensor \(B, C, H, W\), got \(2, 16, 16\)"):
            make_baseline(images()[0], kind)
        with pytest.raises(ValueError, match=r"images must be a tensor \(B, C, H, W\), got \(1, 3, 2, 16, 16\)"):
            make_baseline(images()[None], kind)


def test_bad_inputs_are_named():
    ig = FastIntegratedGradients(small_net(), steps=2)
    with pytest.raises(ValueError, match=r"got 2 target lists for 3 images"):
        ig.attribute(images(), [[0], [1]])
    with pytest.raises(ValueError, match=r"images must be a tensor \(B, C, H, W\), got \(2, 16, 16\)"):
        ig.attribute(images()[0], [[0], [1]])
