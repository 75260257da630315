"""``PackedItems``: datalist items in one byte array, read back as the dicts they were."""

from __future__ import annotations

import math

import pytest

from cxrdoll.data.datalist import PackedItems


def test_items_read_back_equal_and_fresh():
    items = [{"image": "/data/ünï/p1.png", "id": "p1", "raw_label": [1.0, None, -1.0, 0.0], "patient": "x"},
             {"image": "/data/p2.dcm", "id": "p2", "raw_label": [math.nan, 1.0]}, {}]
    packed = PackedItems(items)
    assert len(packed) == 3 and packed[0] == items[0] and packed[2] == {}
    assert math.isnan(packed[1]["raw_label"][0]) and packed[-2]["id"] == "p2"
    assert packed[0:2] == [packed[0], packed[1]] and list(packed)[2] == {}
    packed[0]["id"] = "changed"  # each access decodes a new dict: no caller changes what others read
    assert packed[0]["id"] == "p1"
    with pytest.raises(IndexError):
        packed[3]
    assert len(PackedItems([])) == 0 and list(PackedItems([])) == []
