import math

import pytest

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.labels.targets import is_unlabelled, label_state, raw_labels, target_indices

NF, CARDIO, EDEMA, EFF = (OBSERVATIONS.index(o) for o in ("No Finding", "Cardiomegaly", "Edema", "Pleural Effusion"))


def _raw(**values):
    raw = [None] * len(OBSERVATIONS)
    for index, value in values.items():
        raw[int(index[1:])] = value
    return raw


def test_positives_policy():
    raw = _raw(**{f"c{NF}": 1.0, f"c{CARDIO}": 1.0, f"c{EDEMA}": 0.0, f"c{EFF}": -1.0})
    state = label_state(raw, "positives")
    assert state[CARDIO] == 1 and state[EDEMA] == 0 and state[EFF] == -1
    assert state[NF] == -1  # not localisable, never a target
    assert sum(state == -1) == len(OBSERVATIONS) - 2
    assert target_indices(state) == [CARDIO]


def test_positives_and_uncertain_policy():
    raw = _raw(**{f"c{CARDIO}": 1.0, f"c{EFF}": -1.0})
    assert target_indices(label_state(raw, "positives_uncertain")) == [CARDIO, EFF]


def test_uncertain_targets_keep_negatives_empty_targets():
    raw = _raw(**{f"c{CARDIO}": -1.0, f"c{EDEMA}": 0.0})
    state = label_state(raw, "positives_uncertain")
    assert state[CARDIO] == 1 and state[EDEMA] == 0 and state[EFF] == -1


def test_ensemble_threshold_is_inclusive_and_defaults_to_one_half():
    probs = [0.0] * len(OBSERVATIONS)
    probs[CARDIO], probs[EDEMA], probs[EFF] = 0.5, 0.49, 0.3
    unlabelled = [None] * len(OBSERVATIONS)
    assert target_indices(label_state(unlabelled, "ensemble_predicted", probs)) == [CARDIO]
    assert target_indices(label_state(unlabelled, "ensemble_predicted", probs, 0.3)) == [CARDIO, EDEMA, EFF]


def test_nan_labels_are_blank():
    """A datalist written from a CSV with blanks holds NaN: the image is unlabelled, not labelled."""
    raw = raw_labels({"id": "a", "raw_label": [math.nan] * len(OBSERVATIONS)})
    assert raw == [None] * len(OBSERVATIONS) and is_unlabelled(raw)
    raw = raw_labels({"id": "b", "raw_label": [1] + [math.nan] * (len(OBSERVATIONS) - 1)})
    assert raw[0] == 1.0 and raw[1] is None and not is_unlabelled(raw)


def test_ensemble_predicted_only_for_unlabelled_images():
    probs = [0.9] * len(OBSERVATIONS)
    probs[CARDIO] = 0.2
    state = label_state([None] * len(OBSERVATIONS), "ensemble_predicted", probs, 0.5)
    assert CARDIO not in target_indices(state) and EDEMA in target_indices(state) and state[NF] == -1
    labelled = _raw(**{f"c{CARDIO}": 1.0})
    assert target_indices(label_state(labelled, "ensemble_predicted", probs)) == [CARDIO]
    with pytest.raises(ValueError, match="needs the ensemble's probabilities"):
        label_state([None] * len(OBSERVATIONS), "ensemble_predicted")


def test_bad_items_are_named():
    with pytest.raises(ValueError, match="'p1/x.jpg' has no 'raw_label'"):
        raw_labels({"id": "p1/x.jpg"})
    with pytest.raises(ValueError, match="raw_label has 2 values, expected 14"):
        raw_labels({"id": "a", "raw_label": [1, 0]})
    with pytest.raises(ValueError, match="unknown target policy 'all'"):
        label_state([None] * len(OBSERVATIONS), "all")


def test_label_vectors_of_another_length_are_refused():
    """13 values (No Finding left out) used to shift every observation onto its neighbour's channel:
    a Cardiomegaly-positive row made Enlarged Cardiomediastinum the target."""
    row = [0.0] * (len(OBSERVATIONS) - 1)
    row[CARDIO - 1] = 1.0
    with pytest.raises(ValueError, match="raw labels must hold 14 values in OBSERVATIONS order, got 13"):
        label_state(row)
    with pytest.raises(ValueError, match="ensemble_probs must hold 14 probabilities in OBSERVATIONS order, got 13"):
        label_state([None] * len(OBSERVATIONS), "ensemble_predicted", [0.9] * 13)
