"""benchmarks/classifier_quality.py: the phantoms it trains on are the ones asked for."""

from __future__ import annotations

import argparse
import json


def test_classifier_quality_makes_its_phantoms_again_for_another_size(tmp_path):
    """The GPU session's step must not train at 320 px on what a smoke run left at 64 px."""
    from benchmarks.classifier_quality import ensure_dataset
    from PIL import Image

    args = argparse.Namespace(synth_dir=tmp_path, n=24, image_size=32, synth_workers=1)
    datalist = ensure_dataset(args)
    first = json.loads(datalist.read_text())["training"][0]["image"]
    assert Image.open(first).size == (32, 32)
    before = datalist.stat().st_mtime_ns
    assert ensure_dataset(args) == datalist and datalist.stat().st_mtime_ns == before  # same request: reused
    args.image_size = 64
    first = json.loads(ensure_dataset(args).read_text())["training"][0]["image"]
    assert Image.open(first).size == (64, 64)
