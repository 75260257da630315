"""cxrdoll.argtypes: the argparse types every command shares."""

from __future__ import annotations

import argparse

import pytest

from cxrdoll.argtypes import comma_list, positive_int, positive_int_list


def test_comma_lists_read_every_item_one_way():
    """One comma-list reader for sample-efficiency's --sizes/--seeds/--starts and --decoder-channels, whose
    items may repeat (channel counts) or not (a seed given twice would count its run twice)."""
    assert positive_int_list(" 64, 64 ,32") == [64, 64, 32]
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'0' in '64,0' is not a positive whole number$"):
        positive_int_list("64,0")
    assert comma_list("3,1", positive_int, "a count") == [3, 1]
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'3' is given twice in '3,1,3'$"):
        comma_list("3,1,3", positive_int, "a count")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'x' in '3,x' is not a count$"):
        comma_list("3,x", int, "a count")  # a plain ValueError is worded the same
