"""SegmentationWriter: masks and probabilities at the input size, one output folder per id, never shared by two inputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdoll.engines.seg_writer import SegmentationWriter, file_safe


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


def _write_batch(writer: SegmentationWriter, pred: torch.Tensor, ids: list[str], shapes: list[tuple[int, int]],
                 errors: list[str] | None = None) -> None:
    """Run the writer on one evaluator iteration, as the inference bundles' evaluator would call it."""
    batch = {"id": ids, "orig_shape": [torch.tensor(s) for s in shapes]}
    if errors is not None:
        batch["load_error"] = errors
    writer(SimpleNamespace(state=SimpleNamespace(output={"pred": pred}, batch=batch)))


# A 4 x 4 probability map, left half 1, right half 0, resized bilinearly (half-pixel centres) to width 8:
# output column j samples source column (j + 0.5) / 2 - 0.5, so the columns read 1, 1, 1, 0.75, 0.25, 0, 0, 0.
STEP = torch.tensor([1.0, 1.0, 0.0, 0.0]).expand(4, 4)
STEP_AT_WIDTH_8 = np.array([1, 1, 1, 0.75, 0.25, 0, 0, 0], np.float32)


def test_masks_and_probabilities_are_resized_to_the_input_then_thresholded(tmp_path):
    pred = torch.stack([STEP, torch.full((4, 4), 0.5)])[None]  # the second class exactly at the threshold
    writer = SegmentationWriter(tmp_path, ["left lung", "heart"])
    _write_batch(writer, pred, ["scan"], [(4, 8)])
    folder = tmp_path / "scan"
    prob = np.asarray(Image.open(folder / "left_lung_prob.png"))
    assert prob.shape == (4, 8) and (prob == np.rint(STEP_AT_WIDTH_8 * 255)).all()  # 191 and 64 in the middle
    assert (np.asarray(Image.open(folder / "left_lung_mask.png")) == np.where(STEP_AT_WIDTH_8 > 0.5, 255, 0)).all()
    assert not np.asarray(Image.open(folder / "heart_mask.png")).any()  # a mask is p > threshold, strictly
    assert (np.asarray(Image.open(folder / "heart_prob.png")) == 128).all()  # round(127.5), half to even


def test_nifti_outputs_read_back_as_0_1_masks_and_float_probabilities(tmp_path):
    from cxrdoll.data.segmentation import read_array

    _write_batch(SegmentationWriter(tmp_path, ["lung"], output_format="nifti"), STEP[None, None], ["scan"], [(4, 8)])
    mask, prob = (read_array(tmp_path / "scan" / f"lung_{kind}.nii.gz") for kind in ("mask", "prob"))
    assert mask.dtype == np.uint8 and (mask == (STEP_AT_WIDTH_8 > 0.5)).all()
    assert prob.dtype == np.float32 and np.allclose(prob, STEP_AT_WIDTH_8)


def test_an_unreadable_image_writes_nothing_and_a_wrong_class_count_is_refused(tmp_path):
    writer = SegmentationWriter(tmp_path, ["lung"])
    _write_batch(writer, torch.ones(2, 1, 4, 4), ["good", "bad"], [(4, 4), (4, 4)], errors=["", "bad.png: not an image"])
    assert writer.written == [tmp_path / "good"] and not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match=r"^expected predictions \(B, 1, H, W\), got \(1, 2, 4, 4\)$"):
        _write_batch(writer, torch.ones(1, 2, 4, 4), ["two"], [(4, 4)])
    with pytest.raises(ValueError, match=r"^unknown output_format 'jpg'; expected one of \['png', 'nifti'\]$"):
        SegmentationWriter(tmp_path, ["lung"], output_format="jpg")


@pytest.mark.parametrize(("class_name", "part"), [("left lung", "left_lung"), ("Lung (left)", "Lung_left"),
                                                  ("support devices/lines", "support_devices_lines")])
def test_a_class_name_becomes_one_file_name_part(class_name, part):
    assert file_safe(class_name) == part
