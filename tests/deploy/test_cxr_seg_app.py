"""End to end: the MONAI Deploy app on CPU writes valid SEGs and overlays, skips and reports bad
inputs, and says by its exit code whether anything was written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import csv

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from cxrdoll.deploy.seg_bundle import SegBundle
from cxrdoll.dicom.loader import load_cxr_dicom
from tests.deploy.bad_batch import make_bad_batch, make_only_bad
from tests.deploy.tiny_bundle import NAMES, make_tiny_bundle
from tests.dicom.dciodvfy import dciodvfy_errors

pytest.importorskip("monai.deploy.core", reason="MONAI Deploy SDK not installed (requirements-deploy.txt)")

APP = Path(__file__).resolve().parents[2] / "deploy" / "cxr_seg_app" / "app.py"


def _files_by_sop_uid(folder: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        out.setdefault(str(ds.get("SOPInstanceUID", "")), []).append(path)
    return out


def _run_app(tmp_path: Path, dicom_dir: Path, bundle_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """The app on ``dicom_dir`` with output ``tmp_path / "out"``; ``env`` adds environment variables."""
    out = tmp_path / "out"
    command = f'ulimit -s 32768 && exec "{sys.executable}" "{APP}" -i "{dicom_dir}" -o "{out}" -m "{bundle_dir}"'
    # The app runs with this process's thread count: the comparison below is exact, and convolutions
    # summed in another order by another thread count can flip pixels lying at the 0.5 threshold.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), **env}
    return subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)


def _report(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "report.csv", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def _error_lines(run: subprocess.CompletedProcess) -> list[str]:
    """What the app printed as errors: its own ``error:`` lines and any traceback."""
    return [line for line in run.stderr.splitlines() if line.startswith(("error:", "Traceback"))]


@pytest.mark.slow
def test_app_writes_one_valid_seg_per_cxr_series(shared_data, tmp_path):
    dicom_dir = shared_data / "dicom"
    bundle_dir = make_tiny_bundle(tmp_path / "bundle")
    out = tmp_path / "out"
    run = _run_app(tmp_path, dicom_dir, bundle_dir)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    segs = sorted(out.glob("*_seg.dcm"))
    # Four CR/DX series (SIIM, Barre, NEMA RG1, GDCM DX); the file without File Meta is not loaded by the SDK.
    assert len(segs) == 4 and len(list(out.glob("*_overlay.png"))) == 4
    report = _report(out)
    assert sorted(report) == sorted(p.relative_to(dicom_dir).as_posix() for p in dicom_dir.rglob("*") if p.is_file())
    assert sorted(row["output"] for row in report.values() if row["status"] == "ok") == [p.name for p in segs]
    sources = _files_by_sop_uid(dicom_dir)
    bundle = SegBundle.load(bundle_dir)
    for seg_path in segs:
        seg = hd.seg.segread(seg_path)
        uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        assert seg_path.name == f"{uid}_seg.dcm"
        assert [d.segment_label for d in seg.SegmentSequence] == NAMES
        masks = np.moveaxis(seg.get_pixels_by_source_instance([uid], segment_numbers=[1, 2, 3])[0], -1, 0).astype(bool)
        # The SEG holds what the bundle predicts on the loader's image of one of the files with that UID.
        candidates = [bundle.predict(load_cxr_dicom(p).array) for p in sources[uid]]
        assert any(np.array_equal(masks, c) for c in candidates), seg_path.name
        assert 0 < masks.mean() < 1
        overlay = Image.open(out / f"{uid}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (masks.shape[2], masks.shape[1])
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(seg_path) == [], seg_path.name


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the bad UID, on purpose
def test_bad_inputs_are_skipped_and_reported_and_the_good_ones_written(tmp_path):
    uids = make_bad_batch(tmp_path / "in")
    run = _run_app(tmp_path, tmp_path / "in", make_tiny_bundle(tmp_path / "bundle"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 SEG(s) written; 4 of 6 files skipped" in run.stdout

    out = tmp_path / "out"
    expected = sorted(f"{uid}{suffix}" for uid in uids.values() for suffix in ("_seg.dcm", "_overlay.png"))
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + ["report.csv"])
    assert not list(tmp_path.rglob("*escaped*"))  # the bad UID named no file, inside or outside the output
    report = _report(out)
    assert {f: (r["status"], r["output"]) for f, r in report.items() if r["status"] == "ok"} == {
        name: ("ok", f"{uid}_seg.dcm") for name, uid in uids.items()
    }
    assert report["a_bad_uid.dcm"]["reason"].startswith("invalid SOP Instance UID '1.2.3/../../escaped'")
    assert report["b_pa_truncated.dcm"]["reason"].startswith("pixel data could not be decoded")  # AP used instead
    assert report["d_lateral.dcm"]["reason"] == "not a frontal view (LATERAL from ViewPosition)"
    assert report["notes.txt"]["reason"].startswith("not read by the MONAI Deploy DICOM loader")
    assert "b_pa_truncated.dcm: pixel data could not be decoded" in run.stderr  # the log names the file


def test_nothing_written_exits_1_with_the_report(tmp_path):
    make_only_bad(tmp_path / "in")
    run = _run_app(tmp_path, tmp_path / "in", make_tiny_bundle(tmp_path / "bundle"))
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert _error_lines(run) == [
        f"error: nothing written: 0 SEG(s) written; 3 of 3 files skipped; report: {tmp_path / 'out' / 'report.csv'}"
    ]
    report = _report(tmp_path / "out")
    assert sorted(report) == ["nopixel.dcm", "notes.txt", "palette.dcm"]
    assert {row["status"] for row in report.values()} == {"skipped"}
    assert report["nopixel.dcm"]["reason"] == "has no pixel data"


FULL_DISK = """
import errno, os, runpy, sys
import cxrdoll.deploy.operators as operators
calls, real = [], operators.save_overlay
def full(*args, **kwargs):  # the disk fills up at the second overlay
    calls.append(1)
    if len(calls) > 1:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(*args, **kwargs)
operators.save_overlay = full
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_a_full_disk_stops_the_batch_with_a_one_line_error_naming_the_output(tmp_path):
    """Was: exit code 0, "1 SEG(s) written; 5 of 6 files skipped", the full disk reported as the file's fault."""
    uids = make_bad_batch(tmp_path / "in")
    (tmp_path / "full_disk.py").write_text(FULL_DISK)
    out = tmp_path / "out"
    command = (f'ulimit -s 32768 && exec "{sys.executable}" full_disk.py "{APP}" -i "{tmp_path / "in"}" -o "{out}" '
               f'-m "{make_tiny_bundle(tmp_path / "bundle")}"')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APP.parents[2]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    first, second = sorted(uids.values(), key=lambda uid: f"{uid}_overlay.png" not in os.listdir(out))
    assert _error_lines(run) == [f"error: {out / (second + '_overlay.png')}: No space left on device"]
    # the first case's SEG and overlay stay; the second's SEG is removed with its overlay unwritten
    assert sorted(p.name for p in out.iterdir()) == [f"{first}_overlay.png", f"{first}_seg.dcm"]


def test_empty_input_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "in").mkdir()
    run = _run_app(tmp_path, tmp_path / "in", make_tiny_bundle(tmp_path / "bundle"))
    assert run.returncode == 2
    folder = tmp_path / "in"
    assert _error_lines(run) == [f"error: {folder}: input folder holds no files (searched recursively); nothing to do"]
    assert not (tmp_path / "out" / "report.csv").exists()


def test_an_output_folder_inside_the_input_folder_is_refused(tmp_path):
    make_only_bad(tmp_path / "in")
    run = _run_app(tmp_path, tmp_path, make_tiny_bundle(tmp_path / "bundle"))  # output: tmp_path / "out"
    assert run.returncode == 2
    assert _error_lines(run) == [f"error: {tmp_path / 'out'}: output folder inside the input folder {tmp_path}; "
                                 "its SEGs would be read as input by the next run"]
    assert not any((tmp_path / "out").iterdir())  # the SDK makes the folder; nothing is written into it


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CXR_THRESHOLD": "abc"}, "CXR_THRESHOLD must be a number in (0, 1), e.g. 0.5; got 'abc'"),
        ({"CXR_THRESHOLD": "5"}, "CXR_THRESHOLD must be a number in (0, 1), e.g. 0.5; got '5'"),
        ({"CXR_DEVICE": "gpu"}, "CXR_DEVICE must be cpu, cuda or cuda:N; got 'gpu'"),
        ({}, "{model}: cannot load as a TorchScript model: the file is truncated (its zip directory is missing)"),
    ],
    ids=["threshold-text", "threshold-5", "device-name", "truncated-model"],
)
def test_bad_settings_are_one_line_errors_naming_the_variable_or_file(tmp_path, env, message):
    make_only_bad(tmp_path / "in")
    bundle_dir = make_tiny_bundle(tmp_path / "bundle")
    model = bundle_dir / "models" / "model.ts"
    if not env:
        model.write_bytes(model.read_bytes()[:3000])
    run = _run_app(tmp_path, tmp_path / "in", bundle_dir, **env)
    assert run.returncode == 2
    assert _error_lines(run) == ["error: " + message.format(model=model)]


def test_an_unexpected_error_keeps_its_traceback_and_exits_3(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cxr_seg_app_main", APP)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)

    def bug(self):
        raise TypeError("unsupported operand")  # not a user error: a bug in an operator

    monkeypatch.setattr(app.CXRSegApp, "run", bug)
    assert app.main() == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError: unsupported operand" in err
