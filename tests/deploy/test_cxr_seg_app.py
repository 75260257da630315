"""End to end: the MONAI Deploy app on CPU over the shared DICOMs writes valid SEGs and overlays."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from cxrdoll.deploy.seg_bundle import SegBundle
from cxrdoll.dicom.loader import load_cxr_dicom
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


@pytest.mark.slow
def test_app_writes_one_valid_seg_per_cxr_series(shared_data, tmp_path):
    dicom_dir = shared_data / "dicom"
    bundle_dir = make_tiny_bundle(tmp_path / "bundle")
    out = tmp_path / "out"
    command = f'ulimit -s 32768 && exec "{sys.executable}" "{APP}" -i "{dicom_dir}" -o "{out}" -m "{bundle_dir}"'
    # The app runs with this process's thread count: the comparison below is exact, and convolutions
    # summed in another order by another thread count can flip pixels lying at the 0.5 threshold.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    run = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    segs = sorted(out.glob("*_seg.dcm"))
    # Four CR/DX series (SIIM, Barre, NEMA RG1, GDCM DX); the file without File Meta is not loaded by the SDK.
    assert len(segs) == 4 and len(list(out.glob("*_overlay.png"))) == 4
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
