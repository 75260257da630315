"""Batch jobs skip an unreadable image: placeholder of the loaded shape, reason naming the file, a report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from cxrdoll.data.any_image import LoadAnyImaged
from cxrdoll.data.segmentation import LoadSegmentationSample
from cxrdoll.data.unreadable import ERROR_KEY, SkipUnreadable, UnreadableReport, readable
from cxrdoll.io import save_png_atomic


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.png"
    save_png_atomic(good, np.arange(48 * 40, dtype=np.uint32).reshape(48, 40).astype(np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    return good, bad


@pytest.mark.parametrize("loader", [LoadAnyImaged(16), LoadSegmentationSample(32)], ids=["classification", "segmentation"])
def test_an_unreadable_file_gives_a_same_shaped_placeholder_and_its_reason(files, loader):
    good, bad = files
    load = SkipUnreadable(loader)
    ok = load({"image": str(good), "id": "good"})
    failed = load({"image": str(bad), "id": "bad"})
    assert ok[ERROR_KEY] == "" and failed[ERROR_KEY].startswith(str(bad))
    assert set(failed) >= {"image", "id"} and set(ok) == set(failed)  # collates with good items
    assert failed["image"].shape == ok["image"].shape and not failed["image"].any()
    missing = load({"image": str(bad.parent / "gone.png"), "id": "gone"})
    assert "gone.png" in missing[ERROR_KEY]


@pytest.mark.parametrize("name", ["junk.nii.gz", "junk.nii"])
def test_an_unreadable_nifti_is_skipped_too(tmp_path, name):
    (tmp_path / name).write_bytes(b"not a nifti volume")
    failed = SkipUnreadable(LoadSegmentationSample(32))({"image": str(tmp_path / name), "id": "junk"})
    assert failed[ERROR_KEY].startswith(f"{tmp_path / name}: cannot read as .nii")


def test_readable_reads_the_collated_errors():
    assert readable({"load_error": ["", "x: broken", ""]}, 3) == [True, False, True]
    assert readable({"image": torch.zeros(2)}, 2) == [True, True]  # a loader without the wrapper


def test_report_lists_skipped_items_and_is_rewritten_every_run(tmp_path):
    batches = [{"id": ["a", "b"], ERROR_KEY: ["", "b.png: broken"]}, {"id": ["c"], ERROR_KEY: [""]}]
    engine = Engine(lambda e, batch: None)
    report = UnreadableReport(tmp_path / "skipped.csv")
    report.attach(engine)
    engine.run(batches)
    assert (tmp_path / "skipped.csv").read_text() == "id,reason\nb,b.png: broken\n"
    engine.run([{"id": ["a"], ERROR_KEY: [""]}])
    assert (tmp_path / "skipped.csv").read_text() == "id,reason\n"  # not the earlier run's list
