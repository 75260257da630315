"""Command-line bundle overrides (``sweep-classifiers --set``, ``train_throughput.py --override``)."""

from __future__ import annotations

import pytest

from cxrdoll.engines.bundle_run import parse_overrides


def test_overrides_parse_json_values_and_keep_expressions_as_strings():
    assert parse_overrides(["train#dataloader#pin_memory=false", "batch_size=8",
                            "train#trainer#train_handlers=$@train#handlers[:-3]"]) == {
        "train#dataloader#pin_memory": False, "batch_size": 8,
        "train#trainer#train_handlers": "$@train#handlers[:-3]"}
    with pytest.raises(ValueError, match="'pin_memory': expected ID=VALUE"):
        parse_overrides(["pin_memory"])
