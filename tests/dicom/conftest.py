"""Fixtures for the DICOM tests: every shared DICOM decoded once per session (the big J2K files are slow)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cxrdoll.dicom.loader import CXRImage, load_cxr_dicom


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    return shared_data / "dicom"


@pytest.fixture(scope="session")
def dicom_index(dicom_dir: Path) -> dict[str, dict]:
    """dicom_index.csv rows by relative file path."""
    with open(dicom_dir / "dicom_index.csv", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def decoded(dicom_dir: Path, dicom_index: dict[str, dict]) -> dict[str, CXRImage]:
    """Each shared file through the default loader (voi="auto"), by relative path."""
    return {name: load_cxr_dicom(dicom_dir / name) for name in dicom_index}


def find(names, *fragments: str) -> str:
    """The one name containing every fragment (keeps tests readable despite long file names)."""
    hits = [n for n in names if all(f in n for f in fragments)]
    assert len(hits) == 1, f"{fragments} matched {hits}"
    return hits[0]
