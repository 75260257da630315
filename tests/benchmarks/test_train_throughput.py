"""The training-throughput benchmark's command-line bundle overrides."""

from __future__ import annotations

import pytest

from benchmarks.train_throughput import parse_overrides


def test_bundle_overrides_parse_json_values_and_keep_expressions_as_strings():
    assert parse_overrides(["train#dataloader#pin_memory=false", "batch_size=8",
                            "train#trainer#train_handlers=$@train#handlers[:-3]"]) == {
        "train#dataloader#pin_memory": False, "batch_size": 8,
        "train#trainer#train_handlers": "$@train#handlers[:-3]"}
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        parse_overrides(["pin_memory"])
