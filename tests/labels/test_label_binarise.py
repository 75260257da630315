import numpy as np
import pytest
import torch

from cxrdoll.labels.binarise import binarise, fixed_mask, otsu_mask, top_q_mask


def test_otsu_splits_two_clusters():
    soft = torch.tensor([[0.0, 0.2, 0.1, 0.8], [1.0, 0.9, 0.15, 0.05]])
    assert otsu_mask(soft).tolist() == [[False, False, False, True], [True, True, False, False]]
    assert not otsu_mask(torch.full((3, 3), 0.4)).any()  # a flat map has no structure
    assert not otsu_mask(torch.zeros(3, 3)).any()


def test_top_q_percent():
    soft = torch.arange(100, dtype=torch.float32).reshape(10, 10) / 99
    mask = top_q_mask(soft, 10)
    assert mask.sum().item() == 10 and mask[9].all() and not mask[8].any()
    assert top_q_mask(torch.full((4, 5), 0.5), 10).all()  # ties at the cut are kept
    assert not top_q_mask(torch.zeros(4, 5), 10).any()  # zero is never foreground


def test_top_q_count_is_rounded_and_at_least_one_pixel():
    soft = torch.arange(1, 8, dtype=torch.float32) / 7  # 7 distinct positive pixels
    assert top_q_mask(soft, 50).tolist() == [False] * 3 + [True] * 4  # 3.5 -> 4 pixels (rounded, not floored)
    assert top_q_mask(soft, 20).sum().item() == 1  # 1.4 -> 1
    assert top_q_mask(soft, 1).tolist() == [False] * 6 + [True]  # 0.07 -> at least the top pixel
    for q in (0, -5, 100.5):
        with pytest.raises(ValueError, match=r"top-q percentage must be in \(0, 100\]"):
            top_q_mask(soft, q)


def histogram_otsu_threshold(values: np.ndarray, nbins: int = 256) -> float:
    """Otsu by hand: over a histogram of ``nbins`` bins on [min, max], the class split with the largest
    between-class variance w0 * w1 * (m0 - m1)^2; the threshold is the last lower-class bin's centre."""
    hist, edges = np.histogram(values, bins=nbins, range=(values.min(), values.max()))
    centres = (edges[:-1] + edges[1:]) / 2
    best, threshold = -1.0, None
    for k in range(1, nbins):
        w0, w1 = hist[:k].sum(), hist[k:].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (hist[:k] * centres[:k]).sum() / w0
        m1 = (hist[k:] * centres[k:]).sum() / w1
        between = w0 * w1 * (m0 - m1) ** 2
        if between > best:
            best, threshold = between, centres[k - 1]
    return float(threshold)


def test_otsu_is_the_256_bin_histogram_split_and_the_default():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.3, 0.12, 300), rng.normal(0.7, 0.08, 100)]).clip(0, 1)
    values = values.astype(np.float32).astype(np.float64)
    soft = torch.tensor(values, dtype=torch.float32).reshape(20, 20)
    want = torch.from_numpy(values > histogram_otsu_threshold(values)).reshape(20, 20)
    assert 80 < want.sum() < 140
    assert torch.equal(otsu_mask(soft), want)
    assert torch.equal(binarise(soft), want)  # otsu is the default method


def test_fixed_threshold_and_dispatch():
    soft = torch.tensor([[0.2, 0.5, 0.7]])
    assert fixed_mask(soft, 0.5).tolist() == [[False, True, True]]
    assert binarise(soft, "fixed", 0.6).tolist() == [[False, False, True]]
    assert binarise(soft, "top_q", 34).tolist() == [[False, False, True]]
    with pytest.raises(ValueError, match="binarisation 'fixed' needs a value"):
        binarise(soft, "fixed")
    with pytest.raises(ValueError, match="unknown binarisation 'mean'"):
        binarise(soft, "mean", 0.5)
    with pytest.raises(ValueError, match=r"fixed threshold must be in \(0, 1\]"):
        fixed_mask(soft, 0)


def test_binarise_takes_numpy_and_refuses_non_finite_maps():
    """A numpy map failed with "'numpy.ndarray' object has no attribute 'detach'"; a NaN pixel failed
    inside scikit-image under Otsu and took one of top_q's places as the largest value, marking a pixel fewer."""
    soft = np.array([[0.0, 0.2], [0.8, 1.0]], np.float32)
    assert binarise(soft, "fixed", 0.5).tolist() == [[False, False], [True, True]]
    soft[0, 0] = np.nan
    for method, value in (("otsu", None), ("top_q", 50), ("fixed", 0.5)):
        with pytest.raises(ValueError, match=r"soft map must be non-empty and finite, got shape \(2, 2\) with NaN"):
            binarise(torch.from_numpy(soft), method, value)


def test_otsu_foreground_is_strictly_above_a_threshold_a_pixel_sits_on():
    """Otsu's threshold is a histogram bin centre, which a pixel can equal: that pixel is background."""
    soft = torch.tensor([0.0, 2.0 ** -9, 1.0, 1.0])  # 2**-9 is the centre of the first of 256 bins over [0, 1]
    assert otsu_mask(soft).tolist() == [False, False, True, True]


def test_zero_pixels_are_never_foreground_under_otsu_even_above_a_negative_threshold():
    """A map with negative values puts Otsu's threshold below zero; its zero pixels still carry no evidence."""
    soft = torch.tensor([[-1.0, -1.0], [0.0, 0.0]])
    assert not binarise(soft).any()
    assert binarise(torch.tensor([-1.0, 0.0, 0.5, 0.5])).tolist() == [False, False, True, True]


def test_top_q_of_100_percent_is_every_positive_pixel():
    """q = 100 is allowed (the range is (0, 100]) and keeps all evidence, but still no zero pixel."""
    soft = torch.tensor([[0.0, 0.1], [0.5, 1.0]])
    assert top_q_mask(soft, 100).tolist() == [[False, True], [True, True]]
    assert binarise(soft, "top_q", 100).tolist() == [[False, True], [True, True]]
