import math

import pytest
import torch

from cxrdoll.labels.postprocess import gaussian_kernel1d, gaussian_smooth, percentile_normalise, positive_part, postprocess


def test_positive_part_drops_negative_evidence():
    maps = torch.tensor([[[-2.0, 0.0], [0.5, 3.0]]])
    assert positive_part(maps).tolist() == [[[0.0, 0.0], [0.5, 3.0]]]


def test_gaussian_smoothing_of_a_delta_is_the_outer_product_of_the_kernel():
    # sigma 1, truncate 2 -> radius 2, weights exp(-x^2/2) / Z with Z = 1 + 2 e^-1/2 + 2 e^-2
    z = 1 + 2 * math.exp(-0.5) + 2 * math.exp(-2)
    assert gaussian_kernel1d(1.0, truncate=2.0).tolist() == pytest.approx(
        [math.exp(-2) / z, math.exp(-0.5) / z, 1 / z, math.exp(-0.5) / z, math.exp(-2) / z], rel=1e-6
    )
    delta = torch.zeros(1, 9, 9)
    delta[0, 4, 4] = 1.0
    out = gaussian_smooth(delta, sigma=1.0, truncate=2.0)[0]
    assert out[4, 4].item() == pytest.approx(1 / z**2, rel=1e-6)
    assert out[4, 5].item() == pytest.approx(math.exp(-0.5) / z**2, rel=1e-6)
    assert out[2, 2].item() == pytest.approx(math.exp(-4) / z**2, rel=1e-6)
    assert out[1, 4].item() == 0.0  # outside the radius
    assert out.sum().item() == pytest.approx(1.0, rel=1e-6)  # mass kept away from the border


def test_gaussian_kernel_radius_rounds_up():
    assert gaussian_kernel1d(0.7).numel() == 7  # radius ceil(3 * 0.7) = ceil(2.1) = 3
    assert gaussian_kernel1d(0.1).numel() == 3  # radius at least 1
    with pytest.raises(ValueError, match="sigma must be > 0, got 0"):
        gaussian_kernel1d(0.0)


def test_gaussian_smoothing_keeps_a_constant_map_constant_at_the_border():
    flat = torch.full((2, 6, 7), 0.25)
    torch.testing.assert_close(gaussian_smooth(flat, sigma=1.5), flat)
    assert gaussian_smooth(flat, sigma=0) is flat  # 0 switches smoothing off


def test_percentile_normalisation_divides_by_the_percentile_and_clips():
    maps = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10)
    out = percentile_normalise(maps, percentile=50)  # numpy/torch linear quantile of 0..99 at 0.5 = 49.5
    assert out[0, 3, 3].item() == pytest.approx(33 / 49.5)
    assert out[0, 9, 9].item() == 1.0 and out[0, 0, 0].item() == 0.0


def test_percentile_normalisation_is_per_map():
    ramp = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10)
    maps = torch.cat([ramp, 10 * ramp])  # same shape, ten times the scale: the same soft map
    out = percentile_normalise(maps, percentile=50)
    torch.testing.assert_close(out[1], out[0])
    assert out[0, 3, 3].item() == pytest.approx(33 / 49.5)


def test_postprocess_defaults_to_the_99th_percentile():
    maps = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10)
    # linear quantile of 0..99 at 0.99 = 98.01; smoothing off so only the scale is tested
    assert postprocess(maps, sigma=0)[0, 4, 9].item() == pytest.approx(49 / 98.01)


def test_percentile_normalisation_falls_back_to_the_max_and_keeps_zero_maps_zero():
    sparse = torch.zeros(1, 10, 10)
    sparse[0, 2, 3] = 4.0
    sparse[0, 5, 5] = 2.0
    both = torch.cat([sparse, torch.zeros(1, 10, 10), sparse / 4])
    out = percentile_normalise(both, percentile=90)  # the 90th percentile is 0 -> divide by the max, 4
    assert out[0, 2, 3].item() == 1.0 and out[0, 5, 5].item() == 0.5
    assert out[1].abs().sum().item() == 0.0
    torch.testing.assert_close(out[2], out[0])  # each map by its own max (1 here), not the batch's


def test_postprocess_order_positive_part_before_smoothing():
    maps = torch.zeros(1, 9, 9)
    maps[0, 4, 4] = 1.0
    maps[0, 4, 5] = -10.0  # would cancel the peak if smoothed before the positive part
    out = postprocess(maps, sigma=1.0, percentile=100)
    assert out.max().item() == 1.0 and out[0, 4, 4].item() == 1.0
    assert out.min().item() >= 0.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="percentile must be in"):
        percentile_normalise(torch.ones(1, 2, 2), percentile=0)
    with pytest.raises(ValueError, match=r"expected maps of shape \(T, H, W\)"):
        gaussian_smooth(torch.ones(2, 2), sigma=1.0)


def test_a_single_map_without_its_target_axis_is_refused():
    """An (H, W) map was read as H one-row maps: with smoothing off, ``postprocess`` returned (H, H, W)
    and ``percentile_normalise`` scaled each row by its own percentile."""
    single = torch.rand(8, 6)
    for call in (lambda: postprocess(single, sigma=0.0), lambda: postprocess(single),
                 lambda: percentile_normalise(single), lambda: gaussian_smooth(single, sigma=0.0)):
        with pytest.raises(ValueError, match=r"expected maps of shape \(T, H, W\), got \(8, 6\); a single \(H, W\) map is maps\[None\]"):
            call()
    with pytest.raises(ValueError, match=r"expected maps of shape \(T, H, W\), got \(1, 2, 8, 6\)"):
        percentile_normalise(single[None, None].expand(1, 2, 8, 6))
    with pytest.raises(ValueError, match="expected maps as a torch tensor of shape \\(T, H, W\\), got ndarray"):
        postprocess(single.numpy()[None])
    assert postprocess(single[None], sigma=0.0).shape == (1, 8, 6)


def test_default_radius_is_three_sigma():
    """truncate defaults to 3 for the kernel and the blur: sigma 2 -> radius 6 (13 taps); sigma 1 reaches 3 pixels, not 4."""
    assert gaussian_kernel1d(2.0).numel() == 13
    delta = torch.zeros(1, 11, 11)
    delta[0, 5, 5] = 1.0
    out = gaussian_smooth(delta, sigma=1.0)[0]
    assert out[5, 8].item() > 0 and out[5, 9].item() == 0.0


def test_gaussian_smoothing_replicates_the_edge_at_the_border():
    """Borders replicate the edge value (not mirror it): a corner impulse is padded with copies of itself, so the
    corner keeps the kernel's mass over offsets <= 0 in each axis, ((1 + e^-1/2 + e^-2) / z)^2."""
    z = 1 + 2 * math.exp(-0.5) + 2 * math.exp(-2)
    corner = torch.zeros(1, 7, 7)
    corner[0, 0, 0] = 1.0
    out = gaussian_smooth(corner, sigma=1.0, truncate=2.0)[0]
    assert out[0, 0].item() == pytest.approx(((1 + math.exp(-0.5) + math.exp(-2)) / z) ** 2, rel=1e-6)


def test_small_positive_sigma_still_smooths():
    """Only sigma <= 0 switches smoothing off; sigma 0.5 blurs a delta (radius 2: z = 1 + 2 e^-2 + 2 e^-8)."""
    z = 1 + 2 * math.exp(-2) + 2 * math.exp(-8)
    delta = torch.zeros(1, 9, 9)
    delta[0, 4, 4] = 1.0
    assert gaussian_smooth(delta, sigma=0.5)[0, 4, 4].item() == pytest.approx(1 / z**2, rel=1e-6)


def test_postprocess_smooths_with_sigma_2_by_default():
    """The default blur is sigma 2: along a row of a smoothed delta, tail values fall by exp(-(6^2 - 5^2) / (2 * 2^2))
    from 5 to 6 pixels out (a ratio the percentile scaling keeps), and nothing lies beyond radius 6."""
    delta = torch.zeros(1, 31, 31)
    delta[0, 15, 15] = 1.0
    out = postprocess(delta)[0]
    assert (out[15, 21] / out[15, 20]).item() == pytest.approx(math.exp(-11 / 8), rel=1e-4)
    assert out[15, 22].item() == 0.0
