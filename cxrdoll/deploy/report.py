"""The deploy app's ``report.csv``: one row per input file saying what became of it (no SDK needed).

The operators record the files they handle; files no operator saw (the SDK's loader skips files
that are not DICOM with File Meta, the selector skips non-CR/DX series) get their reason from a
header read when the report is written, so every input file has a row.
"""

from __future__ import annotations

import os
from dataclasses import astuple, dataclass
from pathlib import Path

import pydicom

from cxrdoll.dicom.loader import CXR_MODALITIES
from cxrdoll.errors import writing
from cxrdoll.io import write_csv_atomic

REPORT_NAME = "report.csv"
REPORT_COLUMNS: tuple[str, ...] = ("file", "status", "reason", "output")  # as ingest-dicom's report, first columns


@dataclass
class FileRow:
    """One line of ``report.csv``: ``status`` is ``ok`` (with ``output``) or ``skipped`` (with ``reason``)."""

    file: str
    status: str
    reason: str = ""
    output: str = ""


class RunReport:
    """Outcome per input file, filled in by the operators as the cases pass through them."""

    def __init__(self, input_folder: str | os.PathLike) -> None:
        self.input_folder = Path(input_folder).resolve()
        self._rows: dict[str, FileRow] = {}

    def name(self, path: str | os.PathLike) -> str:
        """``path`` as the report and the log show it: relative to the input folder."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.input_folder):
            return str(path)
        return resolved.relative_to(self.input_folder).as_posix()

    def ok(self, file: str, output: str) -> None:
        self._rows[file] = FileRow(file, "ok", "", output)

    def skipped(self, file: str, reason: str) -> None:
        self._rows[file] = FileRow(file, "skipped", " ".join(reason.split()))

    @property
    def written(self) -> int:
        return sum(row.status == "ok" for row in self._rows.values())

    def rows(self) -> list[FileRow]:
        """A row for every file under the input folder, sorted by name."""
        files = sorted(self.name(p) for p in self.input_folder.rglob("*") if p.is_file())
        return [self._rows.get(f) or FileRow(f, "skipped", _unhandled_reason(self.input_folder / f)) for f in files]

    def write(self, path: str | os.PathLike) -> list[FileRow]:
        """Write ``report.csv`` at ``path``; an OSError (a full disk) is an ``OutputWriteError`` naming it."""
        rows = self.rows()
        with writing(path):
            write_csv_atomic(path, REPORT_COLUMNS, (astuple(row) for row in rows))
        return rows


def _unhandled_reason(path: Path) -> str:
    """Why no operator saw ``path``: read as the SDK's loader reads it (``dcmread`` without force)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return ("not read by the MONAI Deploy DICOM loader: not a DICOM file, or one without File Meta "
                "(python -m cxrdoll ingest-dicom reads those)")
    modality = str(ds.get("Modality", "") or "")
    if modality not in CXR_MODALITIES:
        return f"modality {modality or '(missing)'!r} is not CR or DX"
    return ("left out by the MONAI Deploy DICOM loader (no SOP Instance/Class UID, a DICOMDIR, or a repeated "
            "image position; see its log)")
