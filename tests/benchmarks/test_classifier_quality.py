"""benchmarks/classifier_quality.py: the phantoms it trains on are the ones asked for."""

from __future__ import annotations

import argparse
import json

import pytest


def test_classifier_quality_reuses_only_phantoms_of_the_asked_size(tmp_path):
    """The GPU session's step must not train at 320 px on what a smoke run left at 64 px, nor delete them."""
    from benchmarks.classifier_quality import ensure_dataset
    from PIL import Image

    args = argparse.Namespace(synth_dir=tmp_path / "synth", n=24, image_size=32, synth_workers=1)
    datalist = ensure_dataset(args)
    first = json.loads(datalist.read_text())["training"][0]["image"]
    assert Image.open(first).size == (32, 32)
    before = datalist.stat().st_mtime_ns
    assert ensure_dataset(args) == datalist and datalist.stat().st_mtime_ns == before  # same request: reused
    args.image_size = 64
    with pytest.raises(SystemExit, match=r"synth: holds 24 phantoms at 32 px, not 24 at 64; give another --synth-dir"):
        ensure_dataset(args)
    assert Image.open(first).size == (32, 32)  # left as it was
    args.synth_dir = tmp_path
    with pytest.raises(SystemExit, match=r"not empty and no synth.json \(not phantoms\)"):
        ensure_dataset(args)
