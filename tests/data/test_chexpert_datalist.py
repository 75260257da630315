"""Datalist read/write helpers shared by the stages: round trips and exact error messages."""

from __future__ import annotations

import json

import pytest

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.datalist import load_classification_datalist, load_datalist, write_datalist


def classification(label=None, observations=None) -> dict:
    item = {"image": "/a.png", "label": label or [0.0] * 14, "label_mask": [1] * 14}
    return {"observations": observations or list(OBSERVATIONS), "training": [item], "validation": []}


def test_write_round_trips_with_one_item_per_line(tmp_path):
    data = {"classes": ["lung", "heart"], "training": [{"image": "a.png", "label": ["m.png"]}, {"image": "b.png", "w": 0.5}],
            "validation": [], "note": "é"}
    write_datalist(tmp_path / "d.json", data)
    text = (tmp_path / "d.json").read_text()
    assert json.loads(text) == data
    assert '    {"image": "a.png", "label": ["m.png"]},\n    {"image": "b.png", "w": 0.5}\n' in text
    assert load_datalist(tmp_path / "d.json", ("training", "validation")) == data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "d.json: a datalist must be a JSON object with 'training' lists"),
        ('{"validation": []}', "d.json: no 'training' list (found keys ['validation'])"),
        ('{"training": {"image": "a"}}', "d.json: 'training' must be a list, not dict"),
        ('{"training": [{"image": "a"}, "b.png"]}', "d.json: training[1] must be an object, not str"),
        ('{"training": [{"image": "a"}, {"label": "m"}]}', "d.json: training[1] has no 'image'"),
    ],
)
def test_load_datalist_names_file_section_and_item(tmp_path, content, message):
    (tmp_path / "d.json").write_text(content)
    with pytest.raises(ValueError) as err:
        load_datalist(tmp_path / "d.json")
    assert str(err.value) == f"{tmp_path}/{message}"


def test_load_classification_datalist_checks_observations_and_labels(tmp_path):
    path = tmp_path / "c.json"
    write_datalist(path, classification())
    assert load_classification_datalist(path)["training"][0]["label"] == [0.0] * 14
    write_datalist(path, classification(observations=list(OBSERVATIONS[::-1])))
    with pytest.raises(ValueError, match="c.json: 'observations' must be the 14 CheXpert observations in order"):
        load_classification_datalist(path)
    write_datalist(path, classification(label=[0.5] * 14))
    with pytest.raises(ValueError, match=r"c.json: training\[0\].label must be 14 values of 0 or 1, got \[0.5, "):
        load_classification_datalist(path)
    write_datalist(path, classification(label=[1] * 13))
    with pytest.raises(ValueError, match=r"training\[0\].label must be 14 values"):
        load_classification_datalist(path)
    with pytest.raises(FileNotFoundError, match="nope.json: file not found"):
        load_classification_datalist(tmp_path / "nope.json")
    write_datalist(path, {"training": [{"image": "a.png", "id": "a", "label": "a.npz"}], "validation": []})
    with pytest.raises(ValueError, match=r"^.*c.json: training\[0\] \(id 'a'\) has a 'label' that is one .npz label file, "
                                         r"so it looks like a DoLL label datalist \(for cxr_seg_pretrain\); "
                                         r"cxr_classifier takes a classification datalist: 'python -m cxrdoll "
                                         r"prepare-chexpert' writes one$"):
        load_classification_datalist(path)  # it said only "training[0] has no 'label_mask'"


def test_relative_image_paths_resolve_against_the_datalists_folder_not_the_working_directory(tmp_path, monkeypatch):
    """As in segmentation datalists: read against the working directory, they were "not found" from any other
    folder. Absolute paths stay as written, since image caches and the labeller's records are keyed on them."""
    data = classification()
    data["training"] = [{**data["training"][0], "image": "images/a.png"}, {**data["training"][0], "image": "/x//b.png"}]
    write_datalist(tmp_path / "sub" / "c.json", data)
    monkeypatch.chdir(tmp_path)
    items = load_classification_datalist("sub/c.json")["training"]
    assert [item["image"] for item in items] == [str(tmp_path.resolve() / "sub" / "images" / "a.png"), "/x//b.png"]
    data["training"][0]["image"] = 3
    write_datalist(tmp_path / "sub" / "c.json", data)
    with pytest.raises(ValueError, match=r"^sub/c.json: training\[0\].image must be a file path, got 3$"):
        load_classification_datalist("sub/c.json")
