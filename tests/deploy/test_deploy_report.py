"""report.csv of the deploy app: a row for every input file, also those no operator saw."""

from __future__ import annotations

import csv
import errno
import os
import re

import pytest

from cxrdoll.deploy import report as report_module
from cxrdoll.deploy.report import REPORT_COLUMNS, RunReport
from cxrdoll.errors import OutputWriteError
from tests.dicom.synthetic_dicom import make_cr, save


def test_every_file_gets_a_row_with_its_reason(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("done.dcm", "bad.dcm", "sub/lateral.dcm"):
        save(make_cr(), folder / name)
    save(make_cr(Modality="CT"), folder / "ct.dcm")
    save(make_cr(), tmp_path / "nometa.dcm")
    (folder / "nometa.dcm").write_bytes((tmp_path / "nometa.dcm").read_bytes()[128 + 4:])  # no preamble, "DICM"
    (folder / "notes.txt").write_text("hello")
    report = RunReport(folder)
    assert report.name(folder / "sub" / "lateral.dcm") == "sub/lateral.dcm"
    report.ok("done.dcm", "1.2_seg.dcm")
    report.skipped("bad.dcm", "pixel data\n could not be decoded")
    report.skipped("sub/lateral.dcm", "not a frontal view (LATERAL from ViewPosition)")
    assert report.written == 1

    rows = report.write(tmp_path / "out" / "report.csv")
    with open(tmp_path / "out" / "report.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == REPORT_COLUMNS == ("file", "status", "reason", "output")
    assert [r.file for r in rows] == [r["file"] for r in table]
    by_file = {r["file"]: r for r in table}
    assert list(by_file) == ["bad.dcm", "ct.dcm", "done.dcm", "nometa.dcm", "notes.txt", "sub/lateral.dcm"]
    assert by_file["done.dcm"] == {"file": "done.dcm", "status": "ok", "reason": "", "output": "1.2_seg.dcm"}
    assert by_file["bad.dcm"]["reason"] == "pixel data could not be decoded"  # one line
    assert by_file["ct.dcm"]["reason"] == "modality 'CT' is not CR or DX"
    for name in ("nometa.dcm", "notes.txt"):
        assert by_file[name]["status"] == "skipped"
        assert by_file[name]["reason"].startswith("not read by the MONAI Deploy DICOM loader: not a DICOM file")


def test_a_report_that_cannot_be_written_is_an_error_naming_it(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    save(make_cr(), folder / "a.dcm")

    def no_space(*_, **__):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(report_module, "write_csv_atomic", no_space)
    with pytest.raises(OutputWriteError, match=f"^{re.escape(str(tmp_path / 'report.csv'))}: No space left on device$"):
        RunReport(folder).write(tmp_path / "report.csv")


def test_a_file_name_that_is_not_utf8_gets_its_row_and_its_reason(tmp_path):
    """The report of a folder holding 'M\\xfcller.dcm' (Latin-1 bytes) was not written at all (UnicodeEncodeError)."""
    folder = tmp_path / "in"
    folder.mkdir()
    save(make_cr(Modality="CT"), folder / os.fsdecode(b"M\xfcller.dcm"))
    rows = RunReport(folder).write(tmp_path / "report.csv")
    with open(tmp_path / "report.csv", newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert len(rows) == 1 and table[0]["file"] == "M\\xfcller.dcm"
    assert table[0]["reason"] == "modality 'CT' is not CR or DX"  # read from the file itself


def test_files_no_operator_saw_get_the_reason_their_header_gives(tmp_path):
    """A CR the loader left out, a file without Modality, and a path outside the input folder (shown as given)."""
    folder = tmp_path / "in"
    folder.mkdir()
    save(make_cr(), folder / "cr.dcm")
    no_modality = make_cr()
    del no_modality.Modality
    save(no_modality, folder / "no_modality.dcm")
    report = RunReport(folder)
    reasons = {row.file: row.reason for row in report.rows()}
    assert list(reasons) == ["cr.dcm", "no_modality.dcm"]
    assert reasons["cr.dcm"].startswith("left out by the MONAI Deploy DICOM loader (no SOP Instance/Class UID")
    assert reasons["no_modality.dcm"] == "modality '(missing)' is not CR or DX"
    assert report.name(tmp_path / "elsewhere" / "x.dcm") == str(tmp_path / "elsewhere" / "x.dcm")
