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
