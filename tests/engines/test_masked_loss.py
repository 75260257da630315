import math

import pytest
import torch

from cxrdoll.engines.loss import MaskedBCEWithLogitsLoss

NAN = float("nan")


def _bce(logit: float, y: float, w: float = 1.0) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(w * y * math.log(p) + (1 - y) * math.log(1 - p))


def test_masked_entries_are_ignored_and_mean_is_over_labelled_only():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    target = torch.tensor([[1.0, NAN, 0.0], [NAN, 1.0, NAN]])
    expected = (_bce(2.0, 1) + _bce(0.5, 0) + _bce(3.0, 1)) / 3
    assert MaskedBCEWithLogitsLoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_pos_weight_follows_the_logits_to_their_device():
    """The bundles build the loss on the CPU and MONAI's trainers never move it ('meta' stands in for CUDA)."""
    loss = MaskedBCEWithLogitsLoss(pos_weight=[1.0, 3.0])
    out = loss(torch.zeros(4, 2, device="meta"), torch.zeros(4, 2, device="meta"))
    assert out.device.type == "meta" and loss.pos_weight.device.type == "meta"


def test_pos_weight_scales_positive_terms_only():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    target = torch.tensor([[1.0, 0.0, NAN], [0.0, 1.0, 1.0]])
    w = [2.0, 3.0, 4.0]
    expected = (_bce(2.0, 1, 2) + _bce(-1.0, 0) + _bce(0.0, 0) + _bce(3.0, 1, 3) + _bce(-2.0, 1, 4)) / 5
    assert MaskedBCEWithLogitsLoss(pos_weight=w)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_masked_logits_get_no_gradient_and_all_masked_gives_zero():
    logits = torch.tensor([[2.0, -1.0]], requires_grad=True)
    loss = MaskedBCEWithLogitsLoss()(logits, torch.tensor([[1.0, NAN]]))
    loss.backward()
    assert logits.grad[0, 1].item() == 0.0 and logits.grad[0, 0].item() != 0.0
    empty = MaskedBCEWithLogitsLoss()(logits, torch.tensor([[NAN, NAN]]))
    assert empty.item() == 0.0


def test_shape_errors_are_explicit():
    with pytest.raises(ValueError, match=r"logits \(1, 2\) and target \(1, 3\) differ in shape"):
        MaskedBCEWithLogitsLoss()(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="pos_weight has 3 weights for 2 observations"):
        MaskedBCEWithLogitsLoss(pos_weight=[1, 2, 3])(torch.zeros(1, 2), torch.zeros(1, 2))


def test_pos_weight_by_name_and_bad_weights_are_refused_naming_pos_weight():
    from cxrdoll.constants import OBSERVATIONS

    loss = MaskedBCEWithLogitsLoss(pos_weight={"Cardiomegaly": 5.0})
    assert loss.pos_weight.tolist() == [5.0 if name == "Cardiomegaly" else 1.0 for name in OBSERVATIONS]
    with pytest.raises(ValueError, match=r"pos_weight names \['Cardiomegally'\], not CheXpert observations"):
        MaskedBCEWithLogitsLoss(pos_weight={"Cardiomegally": 5.0})
    # a zero weight is allowed (>= 0): that observation's positives then carry no loss
    zero = MaskedBCEWithLogitsLoss(pos_weight=[0.0, 1.0])(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 1.0]]))
    assert zero.item() == pytest.approx(_bce(-1.0, 1) / 2, rel=1e-6)
    for bad in ([-1.0, 2.0], [float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(ValueError, match="every weight must be a finite number >= 0"):
            MaskedBCEWithLogitsLoss(pos_weight=bad)
    with pytest.raises(ValueError, match="pos_weight '.*': expected one number per observation"):
        MaskedBCEWithLogitsLoss(pos_weight="[NaN, 1]")


def test_a_batch_with_one_labelled_entry_gives_that_entrys_loss():
    """The count is clamped only to avoid 0/0: one labelled entry is a mean over one, not halved."""
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    target = torch.tensor([[NAN, NAN], [NAN, 0.0]])
    assert MaskedBCEWithLogitsLoss()(logits, target).item() == pytest.approx(_bce(3.0, 0), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_the_loss_is_float32_whatever_the_targets_dtype(dtype):
    """torch's BCE takes the target's dtype: a half target would give a half-precision loss, a double one a
    double loss and float64 arithmetic."""
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    target = torch.tensor([[1.0, NAN, 0.0]], dtype=dtype)
    loss = MaskedBCEWithLogitsLoss()(logits, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((_bce(2.0, 1) + _bce(0.5, 0)) / 2, rel=1e-6)


@pytest.mark.parametrize("bad, message", [
    (3.0, r"pos_weight must be one weight per observation, got shape \(\)"),
    ([[1.0, 2.0]], r"pos_weight must be one weight per observation, got shape \(1, 2\)"),
    ([[1.0, 2.0], [3.0]], r"pos_weight \[\[1.0, 2.0\], \[3.0\]\]: expected one number per observation"),
])
def test_a_pos_weight_that_is_not_one_list_of_numbers_is_refused_when_built(bad, message):
    """A scalar or a 2-D weight broadcasts inside BCE (silently, or with a one-observation batch); a ragged list
    was torch's own ValueError without naming pos_weight."""
    with pytest.raises(ValueError, match=message):
        MaskedBCEWithLogitsLoss(pos_weight=bad)
