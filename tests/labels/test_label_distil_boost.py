import pytest
import torch

from cxrdoll.labels.boost import agreement_mask, boost, confidence_weights
from cxrdoll.labels.distil import distil, skill_weights


def test_skill_weights_by_scheme():
    assert skill_weights([0.9, 0.7]).tolist() == pytest.approx([2 / 3, 1 / 3])  # 0.4 : 0.2
    assert skill_weights([0.9, 0.7], "auroc").tolist() == pytest.approx([0.9 / 1.6, 0.7 / 1.6])
    assert skill_weights([0.9, 0.7], "uniform").tolist() == pytest.approx([0.5, 0.5])
    assert skill_weights([0.9, float("nan")]).tolist() == pytest.approx([1.0, 0.0])  # unknown = chance
    assert skill_weights([0.4, 0.5]).tolist() == pytest.approx([0.5, 0.5])  # all at/below chance
    # unknown = chance under every scheme: 0.5 counts, next to 0.9, in plain AUROC weights
    assert skill_weights([0.9, float("nan")], "auroc").tolist() == pytest.approx([0.9 / 1.4, 0.5 / 1.4])
    with pytest.raises(ValueError, match="unknown weight scheme 'best'"):
        skill_weights([0.9], "best")


def test_distil_is_the_weighted_mean():
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    out = distil(maps, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([[2 / 3, 0.0], [0.0, 1 / 3]]))
    with pytest.raises(ValueError, match="must agree"):
        distil(maps, torch.tensor([1.0]))


def test_plain_sequences_and_registry_nulls_are_taken_as_documented():
    """classifiers.json's null AUROC is unknown (chance), not a TypeError ('must be real number, not
    NoneType'); weights, skill and probs given as lists failed with "'list' object has no attribute 'shape'"."""
    assert skill_weights([0.9, None]).tolist() == pytest.approx([1.0, 0.0])
    maps = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    torch.testing.assert_close(distil(maps, [3.0, 1.0]), torch.tensor([[0.75, 0.25]]))
    assert confidence_weights([0.5, 0.5], [0.9, 0.3]).tolist() == pytest.approx([0.75, 0.25])
    torch.testing.assert_close(boost(maps, [0.5, 0.5], [0.9, 0.3], confidence_power=1.0), torch.tensor([[0.75, 0.25]]))
    with pytest.raises(ValueError, match=r"maps must be a torch tensor \(K, H, W\), got ndarray"):
        distil(maps.numpy(), [3.0, 1.0])


def test_confidence_weighting():
    skill = torch.tensor([0.5, 0.5])
    assert confidence_weights(skill, torch.tensor([0.9, 0.3])).tolist() == pytest.approx([0.75, 0.25])
    assert confidence_weights(skill, torch.tensor([0.9, 0.3]), power=2).tolist() == pytest.approx([0.9, 0.1])
    assert confidence_weights(skill, torch.tensor([0.9, 0.3]), power=0).tolist() == pytest.approx([0.5, 0.5])
    assert confidence_weights(skill, torch.tensor([0.0, 0.0])).tolist() == pytest.approx([0.5, 0.5])
    # both fallbacks renormalise skill that does not sum to 1
    raw = torch.tensor([3.0, 1.0])
    assert confidence_weights(raw, torch.tensor([0.0, 0.0])).tolist() == pytest.approx([0.75, 0.25])
    assert confidence_weights(raw, torch.tensor([0.9, 0.3]), power=0).tolist() == pytest.approx([0.75, 0.25])


def test_agreement_of_at_least_m_models():
    maps = torch.tensor([[[0.9, 0.1, 0.6]], [[0.8, 0.7, 0.2]], [[0.5, 0.0, 0.5]]])  # votes >= 0.5: 3, 1, 2
    assert agreement_mask(maps, 2).tolist() == [[True, False, True]]
    assert agreement_mask(maps, 3).tolist() == [[True, False, False]]
    assert agreement_mask(maps[:1], 2).tolist() == [[True, False, True]]  # m capped at K = 1
    with pytest.raises(ValueError, match="min_agree must be >= 1"):
        agreement_mask(maps, 0)
    # One (H, W) map used to vote over its rows and return a mask of one value per column.
    with pytest.raises(ValueError, match=r"expected maps of shape \(T, H, W\), got \(1, 3\)"):
        agreement_mask(maps[0], 1)


def test_boost_combines_confidence_and_agreement():
    maps = torch.tensor([[[1.0, 0.6]], [[0.0, 0.6]]])
    skill = torch.tensor([0.5, 0.5])
    probs = torch.tensor([0.9, 0.3])  # -> weights 0.75 / 0.25
    out = boost(maps, skill, probs, confidence_power=1.0)
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.6]]))
    out = boost(maps, skill, probs, confidence_power=1.0, min_agree=2, agree_threshold=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.6]]))  # only the second pixel has two votes


def test_boost_passes_its_agreement_threshold_on():
    maps = torch.tensor([[[0.9, 0.4]], [[0.8, 0.35]]])  # pixel 1: two votes at 0.3, none at 0.5
    skill = torch.tensor([0.5, 0.5])
    torch.testing.assert_close(boost(maps, skill, min_agree=2, agree_threshold=0.3), torch.tensor([[0.85, 0.375]]))
    torch.testing.assert_close(boost(maps, skill, min_agree=2), torch.tensor([[0.85, 0.0]]))  # default 0.5


def test_distil_refuses_weights_without_a_positive_sum():
    """Weights summing to zero would divide by zero and give an all-NaN map, which binarises to garbage."""
    maps = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    for weights in ([0.0, 0.0], [1.0, -1.0], [-1.0, -2.0]):
        with pytest.raises(ValueError, match="distillation weights must have a positive sum"):
            distil(maps, weights)


def test_boost_agreement_threshold_defaults_to_one_half_inclusive():
    """The default vote threshold is 0.5 and a map at exactly 0.5 votes: 0.45 from both models is not
    agreement, 0.5 from both is."""
    maps = torch.tensor([[[0.45, 0.5]], [[0.45, 0.5]]])
    skill = torch.tensor([0.5, 0.5])
    torch.testing.assert_close(boost(maps, skill, min_agree=2), torch.tensor([[0.0, 0.5]]))
    assert agreement_mask(maps, 2).tolist() == [[False, True]]


def test_confidence_weighting_is_off_by_default_even_when_probabilities_are_given():
    """Both boosting knobs are off at their defaults: with probs but no power, boost is the skill-weighted mean."""
    maps = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = boost(maps, torch.tensor([3.0, 1.0]), torch.tensor([0.1, 0.9]))
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.25]]))


def test_confidence_probabilities_are_clipped_to_zero_one():
    """A probability outside [0, 1] (a raw score or rounding) counts as 0 or 1: 1.5 weighs like 1.0 and a
    negative one gives its model no say, rather than a negative weight."""
    skill = torch.tensor([0.5, 0.5])
    assert confidence_weights(skill, torch.tensor([1.5, 0.5])).tolist() == pytest.approx([2 / 3, 1 / 3])
    assert confidence_weights(skill, torch.tensor([-0.5, 0.5])).tolist() == pytest.approx([0.0, 1.0])
