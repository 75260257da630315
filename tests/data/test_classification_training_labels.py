"""A classifier training split must have labels that count: an all-masked one trained nothing, silently."""

from __future__ import annotations

import json
import logging

import pytest

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.classification import CompactItems, labelled_training
from cxrdoll.engines.bundle_run import make_workflow
from tests.bundles.classifier_data import write_tiny_datalist


def _items(masks: list[list[int]]) -> CompactItems:
    return CompactItems([{"image": f"{i}.png", "label": [0] * len(OBSERVATIONS), "label_mask": m}
                         for i, m in enumerate(masks)])


def test_a_training_split_without_a_counted_label_is_refused_and_unlabelled_observations_named(caplog):
    width = len(OBSERVATIONS)
    with pytest.raises(ValueError, match=r"^d\.json: no label of the training split's 2 images counts \(label_mask 0 "
                                         r"throughout, e\.g\. every study uncertain under --uncertain ignore\), so the "
                                         r"loss is 0 and nothing would train$"):
        labelled_training(_items([[0] * width, [0] * width]), "d.json")
    one = [0] * width
    one[OBSERVATIONS.index("Edema")] = 1
    everything_but_edema = [1 - v for v in one]
    with caplog.at_level(logging.WARNING, logger="cxrdoll.data.classification"):
        items = _items([one, one])
        assert labelled_training(items, "d.json") is items
        assert labelled_training(list(_items([everything_but_edema])), "d.json")  # plain dicts too
    warned = [r.getMessage() for r in caplog.records]
    assert warned[0].startswith("d.json: the training split has no counted label for No Finding, Enlarged "
                                "Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung Lesion, Consolidation,")
    assert "Edema" not in warned[0] and warned[1].startswith("d.json: the training split has no counted label for "
                                                              "Edema: that output is never trained")


def test_the_classifier_bundle_refuses_such_a_split_before_caching_an_image(tmp_path):
    datalist = write_tiny_datalist(tmp_path / "data", n_train=4, n_val=4)
    doc = json.loads(datalist.read_text())
    for item in doc["training"]:
        item["label_mask"] = [0] * len(OBSERVATIONS)
    datalist.write_text(json.dumps(doc))
    workflow = make_workflow(datalist=str(datalist), output_dir=str(tmp_path / "out"), image_size=64, batch_size=2,
                             num_workers=0, device="cpu")
    with pytest.raises(Exception) as raised:
        workflow.parser.get_parsed_content("train#cache")
    assert "no label of the training split's 4 images counts" in str(raised.value.__cause__ or raised.value)
    assert not (tmp_path / "out" / "cache").exists()
