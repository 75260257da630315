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


@pytest.mark.parametrize("image_id", ["..", ".", "", "../escaped", "{tmp}/abs", "a\\..\\..\\b", "a\0b", "x" * 256])
def test_an_id_that_names_no_folder_inside_the_output_is_refused(tmp_path, image_id):
    """Ids come from input data: '..' (an image named '...png') wrote its masks beside OUT, '.' into OUT itself."""
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="id .* (is not a relative path inside|longer than)") as refused:
        SegmentationWriter(out, ["lung"]).write(image_id.replace("{tmp}", str(tmp_path)), np.ones((1, 4, 4)))
    assert "\n" not in str(refused.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_ids_differing_only_in_unicode_form_are_one_folder(tmp_path):
    """'Müller' composed (NFC) and decomposed (NFD, as macOS file names come): one folder on macOS."""
    writer = SegmentationWriter(tmp_path, ["lung"])
    writer.write("M\u00fcller", np.ones((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="was already written"):
        writer.write("Mu\u0308ller", np.ones((1, 4, 4), np.float32))
