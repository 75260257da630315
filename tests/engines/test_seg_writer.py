"""SegmentationWriter: one output folder per id, never shared by two inputs."""

from __future__ import annotations

import numpy as np
import pytest

from cxrdoll.engines.seg_writer import SegmentationWriter


def test_a_second_image_with_an_id_already_written_is_refused(tmp_path):
    writer = SegmentationWriter(tmp_path, ["lung"])
    prob = np.full((1, 4, 4), 0.9, np.float32)
    writer.write("scan", prob)
    writer.write("other", prob)
    for again in ("scan", "SCAN"):  # one folder on a case-insensitive disk
        with pytest.raises(ValueError, match=f"id '{again}' was already written \\(as 'scan'\\)"):
            writer.write(again, prob)
    assert writer.written == [tmp_path / "scan", tmp_path / "other"]
