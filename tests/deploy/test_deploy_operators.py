"""The app's operators in-process: a bad file or case is reported and skipped, and the batch goes on."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from PIL import Image

from cxrdoll.deploy.overlay import overlay_rgb, save_overlay
from cxrdoll.deploy.report import RunReport
from cxrdoll.dicom.loader import load_cxr_dicom
from cxrdoll.errors import OutputWriteError
from tests.deploy.bad_batch import ESCAPING_UID, make_bad_batch
from tests.deploy.tiny_bundle import NAMES, make_tiny_bundle
from tests.dicom.synthetic_dicom import make_cr, save

pytest.importorskip("monai.deploy.core", reason="MONAI Deploy SDK not installed (requirements-deploy.txt)")
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the bad UID, on purpose

from monai.deploy.core import Application  # noqa: E402

import highdicom as hd  # noqa: E402

from cxrdoll.deploy import operators  # noqa: E402
from cxrdoll.deploy.operators import (  # noqa: E402
    CXRCase,
    CXRImageOperator,
    CXRSegInferenceOperator,
    CXRSegWriterOperator,
)


class Port:
    """Stands in for an operator's input and output: ``receive`` gives ``value``, ``emit`` stores it."""

    def __init__(self, value=None) -> None:
        self.value = value

    def receive(self, name: str):
        return self.value

    def emit(self, value, name: str) -> None:
        self.value = value


def _selected(*series: list[Path]) -> list:
    """The selector's output for one study holding ``series`` (lists of files), read as the SDK reads them."""
    selected = []
    for number, files in enumerate(series):
        sops = [SimpleNamespace(get_native_sop_instance=lambda ds=pydicom.dcmread(f): ds) for f in files]
        dicom_series = SimpleNamespace(SeriesInstanceUID=f"1.{number}", get_sop_instances=lambda s=sops: s)
        selected.append(SimpleNamespace(series=dicom_series))
    return [SimpleNamespace(selected_series=selected)]


@pytest.fixture()
def batch(tmp_path) -> tuple[Path, dict[str, str]]:
    return tmp_path / "in", make_bad_batch(tmp_path / "in")


def _case(folder: Path, name: str, uid: str | None = None) -> CXRCase:
    ds = pydicom.dcmread(folder / name)
    return CXRCase(name, uid or ds.SOPInstanceUID, ds, load_cxr_dicom(folder / name))


def test_image_operator_falls_back_to_the_next_frontal_image(batch, caplog):
    folder, uids = batch
    report = RunReport(folder)
    operator, out = CXRImageOperator(Application(), report=report, name="to_image"), Port()
    series = [folder / n for n in ("d_lateral.dcm", "b_pa_truncated.dcm", "c_ap_good.dcm")]
    operator.compute(Port(_selected([folder / "a_bad_uid.dcm"], series, [folder / "e_good.dcm"])), out, None)

    assert [(c.file, c.uid) for c in list(out.value)] == [(name, uids[name]) for name in ("c_ap_good.dcm", "e_good.dcm")]
    rows = {r.file: r for r in report.rows()}
    assert rows["b_pa_truncated.dcm"].status == "skipped"
    assert rows["b_pa_truncated.dcm"].reason.startswith("pixel data could not be decoded")
    assert rows["d_lateral.dcm"].reason == "not a frontal view (LATERAL from ViewPosition)"
    expected_uid_reason = f"invalid SOP Instance UID '{ESCAPING_UID}' (expected at most 64 digits and dots)"
    assert rows["a_bad_uid.dcm"].reason == expected_uid_reason
    # Warnings name the file, not the series.
    assert any(m.startswith("b_pa_truncated.dcm: pixel data could not be decoded") for m in caplog.messages)
    assert any(m.startswith("a_bad_uid.dcm: invalid SOP Instance UID") for m in caplog.messages)


def test_image_operator_reports_frontal_images_it_did_not_need(batch):
    folder, _ = batch
    report = RunReport(folder)
    out = Port()
    CXRImageOperator(Application(), report=report, name="to_image").compute(
        Port(_selected([folder / "e_good.dcm", folder / "c_ap_good.dcm"])), out, None
    )
    assert [c.file for c in list(out.value)] == ["e_good.dcm"]  # PA before AP
    reasons = {r.file: r.reason for r in report.rows()}
    assert reasons["c_ap_good.dcm"] == "not used: e_good.dcm was chosen for its series"


def test_image_operator_decodes_with_its_voi_setting(batch):
    folder, _ = batch
    report = RunReport(folder)
    out = Port()
    CXRImageOperator(Application(), report=report, voi="lut", name="to_image").compute(
        Port(_selected([folder / "e_good.dcm"])), out, None)
    assert list(out.value) == []
    assert {r.file: r.reason for r in report.rows()}["e_good.dcm"] == "voi='lut' but the file has no VOI LUT Sequence"


def test_inference_failure_of_one_case_skips_only_that_case(tmp_path, batch):
    folder, _ = batch
    report = RunReport(folder)
    operator = CXRSegInferenceOperator(
        Application(), bundle_path=make_tiny_bundle(tmp_path / "bundle"), report=report, threshold=0.3, name="inference"
    )
    bad, good = _case(folder, "c_ap_good.dcm"), _case(folder, "e_good.dcm")
    bad.image.array = bad.image.array[0]  # (H, W): the bundle wants (1, H, W)
    out = Port()
    operator.compute(Port([bad, good]), out, None)
    assert list(out.value) == [good] and good.masks.shape == (len(NAMES), 64, 48) and good.names == NAMES
    # the operator's threshold, not predict's default (locals: pytest's report of a failure would repr the operator)
    at_operators, at_default = (operator.bundle.predict(good.image.array, threshold=t) for t in (0.3, 0.5))
    assert np.array_equal(good.masks, at_operators) and not np.array_equal(good.masks, at_default)
    assert {r.file: r.reason for r in report.rows()}["c_ap_good.dcm"].startswith(
        "inference failed (ValueError: expected a (1, H, W) image"
    )


def test_inference_failure_falls_back_on_the_next_frontal_image_of_the_series(tmp_path, batch):
    """Out of memory on the PA of a series: its AP is segmented and written instead."""
    folder, uids = batch
    report = RunReport(folder)
    cases = Port()
    CXRImageOperator(Application(), report=report, name="to_image").compute(
        Port(_selected([folder / "e_good.dcm", folder / "c_ap_good.dcm"])), cases, None
    )
    cases.value = list(cases.value)
    assert [(c.file, [report.name(a.filename) for a in c.alternatives]) for c in cases.value] == [
        ("e_good.dcm", ["c_ap_good.dcm"])]
    inference = CXRSegInferenceOperator(
        Application(), bundle_path=make_tiny_bundle(tmp_path / "bundle"), report=report, name="inference"
    )
    predict, calls = inference.bundle.predict, []

    def out_of_memory_once(image, threshold):
        calls.append(image.shape)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return predict(image, threshold)

    inference.bundle.predict = out_of_memory_once
    segmented = Port()
    inference.compute(cases, segmented, None)
    segmented.value = list(segmented.value)
    assert [c.file for c in segmented.value] == ["c_ap_good.dcm"] and len(calls) == 2
    CXRSegWriterOperator(Application(), output_folder=tmp_path / "out", report=report, name="writer").compute(
        segmented, None, None)
    rows = {r.file: r for r in report.rows()}
    assert (rows["e_good.dcm"].status, rows["e_good.dcm"].reason) == (
        "skipped", "inference failed (RuntimeError: CUDA out of memory)")
    assert (rows["c_ap_good.dcm"].status, rows["c_ap_good.dcm"].output) == ("ok", f"{uids['c_ap_good.dcm']}_seg.dcm")


def test_each_case_is_written_before_the_next_is_decoded(tmp_path, monkeypatch):
    """The chain streams: emitted as lists, every case's image and masks were held at once (40 CRs of
    1024 x 1024: 1.35 GB peak, 0.86 GB streamed and without pydicom's cached pixel arrays)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        save(make_cr(), folder / name)
    report, events = RunReport(folder), []
    decode, write = operators.dataset_to_image, CXRSegWriterOperator._write

    def decoded(ds, *args, source, **kwargs):
        events.append(f"decode {source}")
        return decode(ds, *args, source=source, **kwargs)

    def written(self, case):
        events.append(f"write {case.file}")
        write(self, case)

    monkeypatch.setattr(operators, "dataset_to_image", decoded)
    monkeypatch.setattr(CXRSegWriterOperator, "_write", written)
    cases, segmented = Port(), Port()
    CXRImageOperator(Application(), report=report, name="to_image").compute(
        Port(_selected(*[[folder / name] for name in ("a.dcm", "b.dcm", "c.dcm")])), cases, None)
    CXRSegInferenceOperator(Application(), bundle_path=make_tiny_bundle(tmp_path / "bundle"), report=report,
                            name="inference").compute(cases, segmented, None)
    assert events == []
    CXRSegWriterOperator(Application(), output_folder=tmp_path / "out", report=report, name="writer").compute(
        segmented, None, None)
    assert events == [f"{event} {name}" for name in ("a.dcm", "b.dcm", "c.dcm") for event in ("decode", "write")]
    assert report.written == 3


def test_writer_writes_the_valid_case_after_one_highdicom_refuses(tmp_path, batch):
    """The probe's case: a source whose SOP Instance UID highdicom cannot use raised AttributeError
    inside highdicom and stopped the app before the next case."""
    folder, uids = batch
    report = RunReport(folder)
    out_dir = tmp_path / "out"
    writer = CXRSegWriterOperator(Application(), output_folder=out_dir, report=report, name="writer")
    cases = [_case(folder, "a_bad_uid.dcm", uid="1.2.3"), _case(folder, "e_good.dcm")]
    for case in cases:
        case.masks, case.names = np.ones((len(NAMES), 64, 48), dtype=bool), NAMES
    writer.compute(Port(cases), None, None)

    uid = uids["e_good.dcm"]
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{uid}_overlay.png", f"{uid}_seg.dcm"]
    rows = {r.file: r for r in report.rows()}
    assert (rows["e_good.dcm"].status, rows["e_good.dcm"].output) == ("ok", f"{uid}_seg.dcm")
    assert rows["a_bad_uid.dcm"].status == "skipped"
    assert rows["a_bad_uid.dcm"].reason.startswith("SEG not written (AttributeError: ")


def test_writer_skips_a_second_file_with_a_uid_already_written(tmp_path, batch):
    folder, uids = batch
    report = RunReport(folder)
    out_dir = tmp_path / "out"
    writer = CXRSegWriterOperator(Application(), output_folder=out_dir, report=report, name="writer")
    first = _case(folder, "e_good.dcm")
    copy = _case(folder, "c_ap_good.dcm", uid=first.uid)  # another file claiming the same image
    for case in (first, copy):
        case.masks, case.names = np.ones((len(NAMES), 64, 48), dtype=bool), NAMES
    copy.masks = np.zeros_like(copy.masks)
    first.masks[0, 32:] = False  # channels that differ: the overlay keeps their order
    writer.compute(Port([first, copy]), None, None)
    rows = {r.file: r for r in report.rows()}
    assert rows["e_good.dcm"].status == "ok"
    assert (rows["c_ap_good.dcm"].status, rows["c_ap_good.dcm"].reason) == (
        "skipped", "duplicate SOP Instance UID of e_good.dcm")
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{first.uid}_overlay.png", f"{first.uid}_seg.dcm"]
    save_overlay(tmp_path / "expected.png", first.image.array[0], first.masks)  # the first file's, not the copy's
    assert (out_dir / f"{first.uid}_overlay.png").read_bytes() == (tmp_path / "expected.png").read_bytes()


def test_a_uid_whose_seg_was_not_written_is_written_for_the_next_file_with_it(tmp_path, batch):
    """Only a written UID makes a later file a duplicate: here the first file's masks do not fit its image."""
    folder, _ = batch
    report = RunReport(folder)
    out_dir = tmp_path / "out"
    first = _case(folder, "e_good.dcm")
    copy = _case(folder, "c_ap_good.dcm", uid=first.uid)
    first.masks, copy.masks = np.ones((len(NAMES), 2, 2), dtype=bool), np.ones((len(NAMES), 64, 48), dtype=bool)
    first.names = copy.names = NAMES
    CXRSegWriterOperator(Application(), output_folder=out_dir, report=report, name="writer").compute(
        Port([first, copy]), None, None)
    rows = {r.file: r for r in report.rows()}
    assert rows["e_good.dcm"].status == "skipped" and rows["e_good.dcm"].reason.startswith("SEG not written (")
    assert (rows["c_ap_good.dcm"].status, rows["c_ap_good.dcm"].output) == ("ok", f"{first.uid}_seg.dcm")


def _no_space(*_, **__):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failing", ["seg", "overlay"])
def test_writer_stops_the_batch_naming_an_output_a_full_disk_refused(tmp_path, batch, monkeypatch, failing):
    """Was: each case skipped as "SEG not written (OSError: [Errno 28] ...)", the app's exit code 0."""
    folder, uids = batch
    report = RunReport(folder)
    out_dir = tmp_path / "out"
    writer = CXRSegWriterOperator(Application(), output_folder=out_dir, report=report, name="writer")
    cases = [_case(folder, "c_ap_good.dcm"), _case(folder, "e_good.dcm")]
    for case in cases:
        case.masks, case.names = np.ones((len(NAMES), 64, 48), dtype=bool), NAMES
    if failing == "seg":
        monkeypatch.setattr(hd.seg.Segmentation, "save_as", _no_space)
    else:
        monkeypatch.setattr(operators, "save_overlay", _no_space)
    with pytest.raises(OutputWriteError) as caught:
        writer.compute(Port(cases), None, None)
    output = out_dir / f"{uids['c_ap_good.dcm']}_{'seg.dcm' if failing == 'seg' else 'overlay.png'}"
    assert str(caught.value) == f"{output}: No space left on device"
    assert list(out_dir.iterdir()) == []  # no SEG left without its overlay, and the next case not tried
    assert report.written == 0


def test_overlay_blends_each_mask_in_its_colour_in_mask_order():
    """40 % of the colour over 60 % of the grey, the second mask over the first (tab10 blue, then orange)."""
    image = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    masks = np.array([[[1, 0], [0, 0]], [[1, 0], [0, 1]]], dtype=np.uint8)
    first = 0.4 * np.array([31, 119, 180])  # over black
    expected = [
        [0.6 * first + 0.4 * np.array([255, 127, 14]), [255, 255, 255]],
        [[127.5] * 3, 0.6 * 63.75 + 0.4 * np.array([255, 127, 14])],
    ]
    got = overlay_rgb(image, masks)
    assert got.dtype == np.uint8 and got.shape == (2, 2, 3)
    np.testing.assert_array_equal(got, np.rint(np.array(expected, dtype=np.float64)).astype(np.uint8))
    assert got[0, 0].tolist() == [109, 79, 49] and got[1, 1].tolist() == [140, 89, 44]


def test_overlay_cycles_the_palette_saturates_and_is_saved_as_blended(tmp_path):
    """The 11th mask takes the 1st colour again (tab10 has ten); grey outside [0, 1] saturates rather than
    wrapping round in uint8; the PNG holds the blend of overlapping masks in mask order."""
    image = np.array([[1.5, -0.5], [0.0, 0.0]], dtype=np.float32)
    masks = np.zeros((11, 2, 2), dtype=bool)
    masks[10, 1, 0] = masks[0, 1, 1] = True
    got = overlay_rgb(image, masks)
    assert got[0].tolist() == [[255, 255, 255], [0, 0, 0]]
    assert got[1, 0].tolist() == got[1, 1].tolist() == np.rint(0.4 * np.array([31, 119, 180])).tolist()
    overlapping = np.array([[[1, 1], [0, 0]], [[1, 0], [0, 1]]], dtype=bool)
    save_overlay(tmp_path / "o.png", image, overlapping)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), overlay_rgb(image, overlapping))
