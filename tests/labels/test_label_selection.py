import json
import math

import pytest

from cxrdoll.constants import LOCALISABLE_OBSERVATIONS, OBSERVATIONS
from cxrdoll.labels.selection import best_for, best_overall, load_registry, select_models, trained_size


def _registry(tmp_path, aurocs, means):
    doc = {
        "observations": list(OBSERVATIONS),
        "data_hash": "h",
        "classifiers": [
            {"name": f"m{k}", "arch": "densenet_tiny", "checkpoint": f"m{k}.pt", "image_size": 64,
             "auroc": a, "mean_auroc": m}
            for k, (a, m) in enumerate(zip(aurocs, means))
        ],
    }
    path = tmp_path / "classifiers.json"
    path.write_text(json.dumps(doc))
    return path


def test_tau_selection_with_best_single_fallback(tmp_path):
    path = _registry(
        tmp_path,
        [
            {"Cardiomegaly": 0.90, "Edema": 0.60},
            {"Cardiomegaly": 0.85, "Edema": 0.75, "Atelectasis": None},
            {"Cardiomegaly": 0.70, "Edema": 0.70},
        ],
        [0.7, None, 0.9],
    )
    registry = load_registry(path)
    assert registry.classifiers[0].checkpoint == str(tmp_path / "m0.pt")  # relative to the registry file
    sel = select_models(registry, tau=0.8)
    assert sel["Cardiomegaly"] == [0, 1]
    assert sel["Edema"] == [1]  # nobody reaches 0.8: best single model for Edema
    assert sel["Atelectasis"] == [2]  # no AUROC anywhere: best mean AUROC
    assert set(sel) == set(LOCALISABLE_OBSERVATIONS)
    assert best_overall(registry) == 2 and best_for(registry, "Edema") == 1
    assert math.isnan(registry.classifiers[1].skill("Atelectasis"))
    assert math.isnan(registry.classifiers[1].mean_auroc)  # null in the registry


def test_tau_is_inclusive_and_ties_go_to_the_first_model(tmp_path):
    path = _registry(
        tmp_path,
        [
            {"Cardiomegaly": 0.8, "Edema": 0.7, "Atelectasis": 0.6},
            {"Cardiomegaly": 0.7, "Edema": 0.7},  # no AUROC for Atelectasis: not a fallback reason
            {"Cardiomegaly": 0.8, "Edema": 0.6},
        ],
        [0.6, 0.9, 0.9],
    )
    registry = load_registry(path)
    sel = select_models(registry, tau=0.8)
    assert sel["Cardiomegaly"] == [0, 2]  # AUROC == tau is selected
    assert sel["Edema"] == [0]  # best single model: 0 and 1 tie at 0.7, the first wins
    assert sel["Atelectasis"] == [0]  # the only model with an AUROC, though its mean is the lowest
    assert best_overall(registry) == 1  # 1 and 2 tie on mean AUROC, the first wins


def test_unknown_or_misspelt_observations_are_named(tmp_path):
    """A misspelt name has no AUROC anywhere, so it silently fell back to the best overall model; a
    string was read letter by letter into {'C': [...], 'a': [...], ...}."""
    registry = load_registry(_registry(tmp_path, [{"Pleural Effusion": 0.9}, {"Pleural Effusion": 0.6}], [0.5, 0.8]))
    with pytest.raises(ValueError, match=r"unknown observation\(s\) \['Pleural effusion'\]; expected names of"):
        select_models(registry, 0.8, ("Pleural effusion",))
    with pytest.raises(ValueError, match=r"unknown observation\(s\) \['Cardio'\]"):
        best_for(registry, "Cardio")
    with pytest.raises(TypeError, match=r"observations must be a sequence of names, got the string 'Pleural Effusion'"):
        select_models(registry, 0.8, "Pleural Effusion")
    assert select_models(registry, 0.8, ("Pleural Effusion",)) == {"Pleural Effusion": [0]}


def test_a_nan_mean_auroc_never_wins(tmp_path):
    for means in ([None, 0.6], [0.6, None]):
        registry = load_registry(_registry(tmp_path, [{}, {}], means))
        assert best_overall(registry) == means.index(0.6)


def test_registry_errors_name_the_file(tmp_path):
    path = tmp_path / "classifiers.json"
    path.write_text(json.dumps({"classifiers": [{"name": "a", "arch": "x"}]}))
    with pytest.raises(ValueError, match=r"classifiers.json: classifiers\[0\] lacks \['checkpoint'\]"):
        load_registry(path)
    path.write_text(json.dumps({"classifiers": [{"name": "a", "arch": "x", "checkpoint": "c", "auroc": {"Cardio": 1}}]}))
    with pytest.raises(ValueError, match=r"AUROC for unknown observations \['Cardio'\]"):
        load_registry(path)
    entry = {"name": "a", "arch": "x", "checkpoint": "c"}
    path.write_text(json.dumps({"classifiers": [entry, dict(entry, checkpoint="d")]}))
    with pytest.raises(ValueError, match=r"classifiers.json: classifier names are not unique: \['a', 'a'\]"):
        load_registry(path)
    path.write_text(json.dumps({"observations": ["A"], "classifiers": []}))
    with pytest.raises(ValueError, match="differ from cxrdoll.constants.OBSERVATIONS"):
        load_registry(path)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("auroc", "high", "'auroc' must be an object of observation: number or null, got 'high'"),
        ("auroc", {"Edema": "0.8"}, "'auroc' must be an object of observation: number or null, got {'Edema': '0.8'}"),
        ("mean_auroc", [0.7], "'mean_auroc' must be a number or null, got [0.7]"),
        ("image_size", "64", "'image_size' must be a whole number, got '64'"),
        ("arch", None, "'arch' must be a non-empty string, got None"),
    ],
)
def test_registry_field_types_name_the_file_entry_and_field(tmp_path, field, value, problem):
    path = _registry(tmp_path, [{"Edema": 0.7}], [0.7])
    doc = json.loads(path.read_text())
    doc["classifiers"][0][field] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError) as err:
        load_registry(path)
    assert str(err.value) == f"{path}: classifiers[0] ('m0'): {problem}"


def test_the_labelling_size_defaults_to_the_size_the_classifiers_were_trained_at(tmp_path):
    path = _registry(tmp_path, [{}, {}], [0.8, 0.7])
    assert trained_size(path) == 64
    doc = json.loads(path.read_text())
    for entry in doc["classifiers"]:
        del entry["image_size"]  # registries that record no size: the classifier bundle's default
    path.write_text(json.dumps(doc))
    assert trained_size(path) == 320
    # the size the classifier bundle recorded beside a checkpoint stands in for a missing entry
    (tmp_path / "metrics.json").write_text(json.dumps({"run": {"network_name": "densenet_tiny", "image_size": 96}}))
    assert trained_size(path) == 96 and load_registry(path).classifiers[1].image_size == 96
    (tmp_path / "metrics.json").unlink()
    doc["classifiers"][0]["image_size"], doc["classifiers"][1]["image_size"] = 64, 128
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"classifiers.json: the classifiers were trained at different sizes "
                                         r"\(m0 64 px, m1 128 px\); choose the labelling size with --image_size"):
        trained_size(path)
