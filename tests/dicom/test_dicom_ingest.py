"""``python -m cxrdoll ingest-dicom``: outputs, per-file report, privacy, and a batch that survives bad files."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.transforms import Compose

from cxrdoll.cli import main
from cxrdoll.data.transforms import load_image_transforms
from cxrdoll.dicom import ingest
from cxrdoll.dicom.loader import load_cxr_dicom
from tests.dicom.conftest import find
from tests.dicom.crashing_reader import crash_on_named, full_disk_on_named
from tests.dicom.synthetic_dicom import flat, make_cr, save

SHARED = (("original/", "nometa"), ("original/", "SIIM"), ("derived/", "dx_chest", "explicitLE"))


@pytest.fixture
def input_dir(tmp_path, dicom_dir, dicom_index):
    """Three real files (linked, never copied) plus hand-made cases, some in a sub-folder."""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    for i, fragments in enumerate(SHARED):
        (root / f"real{i}.dcm").symlink_to(dicom_dir / find(dicom_index, *fragments))
    good = make_cr((np.arange(40 * 30) % 500).reshape(40, 30).astype(np.uint16))
    save(good, root / "sub" / "deeper" / "Doe_Jane_named.dcm")
    save(make_cr(ViewPosition="LL"), root / "sub" / "lateral.dcm")
    save(make_cr(Modality="CT"), root / "ct.dcm")
    save(make_cr(NumberOfFrames=2), root / "multiframe.dcm")
    save(make_cr(PhotometricInterpretation="RGB", SamplesPerPixel=3), root / "rgb.dcm")
    save(make_cr(SOPInstanceUID=good.SOPInstanceUID), root / "zz_duplicate.dcm")
    (root / "notes.txt").write_text("not DICOM\n")
    save(make_cr(), tmp_path / "frontal.dcm")  # a frontal view: a lateral is skipped before decoding
    (root / "truncated.dcm").write_bytes((tmp_path / "frontal.dcm").read_bytes()[:-100])
    return root


def _report(out):
    with open(out / "report.csv", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def test_ingest_writes_images_datalist_and_report(input_dir, tmp_path, dicom_dir, dicom_index, capsys):
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(input_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"ingested 4 of 11 files (7 skipped); report: {out}/report.csv"
    report = _report(out)
    reasons = {name: row["reason"] for name, row in report.items() if row["status"] == "skipped"}
    assert reasons == {
        "ct.dcm": "modality 'CT' is not CR or DX",
        "multiframe.dcm": "is multi-frame (2 frames); expected a single-frame radiograph",
        "rgb.dcm": "is colour (PhotometricInterpretation 'RGB', SamplesPerPixel 3); expected MONOCHROME1/2 greyscale",
        "notes.txt": "not a DICOM file (no SOP Class UID, Modality or Pixel Data)",
        "sub/lateral.dcm": "not a frontal view (LATERAL from ViewPosition)",
        "zz_duplicate.dcm": "duplicate SOP Instance UID of sub/deeper/Doe_Jane_named.dcm",
        "truncated.dcm": reasons["truncated.dcm"],
    }
    assert reasons["truncated.dcm"].startswith(("not a readable DICOM file", "pixel data could not be decoded"))
    for path in [p for p in out.rglob("*") if p.is_file()]:  # DICOM patient IDs are never written
        assert "SECRET-123" not in path.read_bytes().decode("latin-1"), path
    assert report["real2.dcm"]["voi"].startswith("minmax (window 2725/5310")
    datalist = json.loads((out / "datalist.json").read_text())
    items = {item["id"]: item for item in datalist["training"]}
    assert sorted(items) == ["real0", "real1", "real2", "sub__deeper__Doe_Jane_named"]
    assert items["real1"]["pixel_spacing"] == pytest.approx([0.168, 0.168])
    assert items["real2"]["view"] == "UNKNOWN"
    # The PNGs go through the project's standard PNG pipeline to the loader's array (8-bit steps).
    png = Compose(load_image_transforms(("image",), size=440))({"image": items["real0"]["image"]})["image"]
    expected = load_cxr_dicom(dicom_dir / find(dicom_index, "original/", "nometa")).array
    assert np.abs(np.asarray(png) - expected).max() <= 0.5 / 255 + 1e-6


def test_nifti_output_with_resize_keeps_spacing_and_all_views(input_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["ingest-dicom", "--in", str(input_dir), "--out", str(out), "--format", "nifti", "--size", "20", "--views", "all"]
    assert main(argv) == 0
    assert _report(out)["sub/lateral.dcm"]["status"] == "ok"
    datalist = json.loads((out / "datalist.json").read_text())
    assert (datalist["format"], datalist["size"]) == ("nifti", 20)
    item = next(i for i in datalist["training"] if "Doe" in i["id"])
    nifti = nib.load(item["image"])
    assert nifti.shape == (20, 20) and nifti.get_data_dtype() == np.float32
    assert item["pixel_spacing"] == pytest.approx([0.2 * 40 / 20, 0.25 * 30 / 20])
    np.testing.assert_allclose(np.diag(nifti.affine)[:2], item["pixel_spacing"])
    assert 0.0 <= nifti.get_fdata().min() and nifti.get_fdata().max() <= 1.0


def test_resizing_averages_each_block_of_pixels_as_the_bundles_area_resize_does(tmp_path):
    """A 64 x 64 image written at 16 px holds the means of its 4 x 4 blocks: a bilinear resize would
    sample a few pixels of each block, aliasing fine texture, and differ from what the classifier reads."""
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(0)
    save(make_cr(rng.integers(0, 4096, size=(64, 64)).astype(np.uint16), WindowCenter=2048, WindowWidth=4096),
         root / "a.dcm")
    full, small = tmp_path / "full", tmp_path / "small"
    ingest.ingest_folder(root, full, ingest.IngestOptions(fmt="nifti"))
    ingest.ingest_folder(root, small, ingest.IngestOptions(fmt="nifti", size=16))
    pixels = nib.load(full / "images" / "a.nii.gz").get_fdata()
    assert pixels.shape == (64, 64) and pixels.std() > 0.2  # fine texture, where the two resizes differ
    blocks = pixels.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(nib.load(small / "images" / "a.nii.gz").get_fdata(), blocks, atol=1e-5)


def test_deidentify_leaves_no_names_ids_paths_or_uids(input_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(input_dir), "--out", str(out), "--deidentify"]) == 0
    printed = capsys.readouterr()
    secrets = ["Doe", "SECRET-123", "lateral", "real0", str(input_dir), "1.2.276.0.7230010"]
    for path in [p for p in out.rglob("*") if p.is_file()]:
        text = path.read_bytes().decode("latin-1")
        for secret in secrets:
            assert secret not in text and secret not in path.name, f"{secret!r} found in {path}"
    for secret in secrets[:2]:
        assert secret not in printed.out + printed.err
    assert all(row["file"].startswith("cxr_") for row in _report(out).values())


def test_keyed_pseudonyms_are_stable_per_key_and_not_the_plain_path_hash(tmp_path, capsys):
    import hashlib
    import hmac

    root = tmp_path / "in" / "00731942"  # an MRN as folder name
    root.mkdir(parents=True)
    save(make_cr(), root / "CR_0001.dcm")
    key = tmp_path / "secret.key"
    key.write_bytes(b"correct horse\n")
    names = []
    for run, key_args in enumerate(([], ["--pseudonym-key-file", str(key)], ["--pseudonym-key-file", str(key)])):
        out = tmp_path / f"out{run}"
        assert main(["ingest-dicom", "--in", str(tmp_path / "in"), "--out", str(out), "--deidentify", *key_args]) == 0
        (row,) = _report(out).values()
        names.append(row["file"])
    plain = "cxr_" + hashlib.sha256(b"00731942/CR_0001.dcm").hexdigest()[:16]  # what a guesser can recompute
    keyed = "cxr_" + hmac.new(b"correct horse", b"00731942/CR_0001.dcm", hashlib.sha256).hexdigest()[:16]
    assert names == [plain, keyed, keyed]
    capsys.readouterr()
    assert main(["ingest-dicom", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                 "--pseudonym-key-file", str(key)]) == 2
    assert capsys.readouterr().err == "error: --pseudonym-key-file makes pseudonyms: give --deidentify too\n"
    key.write_text("\n")
    assert main(["ingest-dicom", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--deidentify",
                 "--pseudonym-key-file", str(key)]) == 2
    assert capsys.readouterr().err == f"error: {key}: pseudonym key file is empty\n"
    assert not (tmp_path / "o").exists()


def test_missing_input_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["ingest-dicom", "--in", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: input folder not found"


def test_empty_input_folder_fails_and_keeps_earlier_outputs(tmp_path, capsys):
    good = tmp_path / "in"
    good.mkdir()
    save(make_cr(), good / "a.dcm")
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(good), "--out", str(out)]) == 0
    before = {name: (out / name).read_text() for name in ("datalist.json", "report.csv")}
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["ingest-dicom", "--in", str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'empty'}: no files found (searched recursively); nothing written\n"
    assert {name: (out / name).read_text() for name in before} == before
    assert main(["ingest-dicom", "--in", str(good / "a.dcm"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {good / 'a.dcm'}: input is not a folder")


def test_inputs_whose_sanitised_names_collide_get_distinct_outputs(tmp_path):
    root = tmp_path / "in"
    for folder, level in (("Möller", 100), ("Müller", 200)):
        (root / folder).mkdir(parents=True)
        save(make_cr(flat(level), WindowCenter=100, WindowWidth=400), root / folder / "1.dcm")
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out)]) == 0
    report = _report(out)
    first, second = report["Möller/1.dcm"]["output"], report["Müller/1.dcm"]["output"]
    assert first == "images/M_ller__1.png" and second.startswith("images/M_ller__1_") and second != first
    items = json.loads((out / "datalist.json").read_text())["training"]
    assert len({item["id"] for item in items}) == 2
    levels = {row: np.asarray(__import__("PIL.Image").Image.open(out / report[row]["output"])).mean()
              for row in report}
    assert levels["Möller/1.dcm"] < levels["Müller/1.dcm"]  # each output holds its own input


def test_an_input_path_longer_than_a_file_name_is_ingested_under_a_shortened_name(tmp_path):
    """A PACS layout of UID folders (Study/Series/SOP.dcm) joins into one name of over 255 bytes: the
    file system refused it, and the whole batch stopped as if the disk were full."""
    uid = "1.2.840.113619.2.55.3." + "7" * 42
    relative = f"{uid}1/{uid}2/{uid}3/{uid}4.dcm"
    (tmp_path / "in" / relative).parent.mkdir(parents=True)
    save(make_cr(), tmp_path / "in" / relative)
    save(make_cr(), tmp_path / "in" / "short.dcm")
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(tmp_path / "in"), "--out", str(out), "--workers", "0"]) == 0
    report = _report(out)
    assert report[relative]["status"] == "ok" and report["short.dcm"]["output"] == "images/short.png"
    output = out / report[relative]["output"]
    assert output.is_file() and len(output.name.encode()) <= 255 and output.name.startswith(uid)


def test_an_input_named_like_a_temporary_keeps_its_output(tmp_path):
    """'.scan.abcdefgh.tmp.dcm' became '.scan.abcdefgh.tmp.png', which the end-of-run sweep of killed
    writers' temporaries deleted, while the datalist and report still listed it."""
    root = tmp_path / "in"
    root.mkdir()
    save(make_cr(), root / ".scan.abcdefgh.tmp.dcm")
    save(make_cr(), root / ".dcm")
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "0"]) == 0
    items = json.loads((out / "datalist.json").read_text())["training"]
    assert len(items) == 2 and all(Path(item["image"]).is_file() for item in items)
    assert not any(Path(item["image"]).name.startswith(".") for item in items)  # no hidden outputs either


def test_a_clash_s_hash_suffix_never_takes_another_input_s_name(tmp_path):
    """'a/b.dcm' and 'a__b.dcm' both sanitise to 'a__b'; the second got 'a__b_<hash>', which a file
    'a__b <hash>' had already been given: one image overwrote the other and that input had no report row."""
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    suffix = ingest.hashlib.sha256(b"a__b.dcm").hexdigest()[:8]
    for i, relative in enumerate(("a/b.dcm", f"a__b {suffix}", "a__b.dcm")):
        save(make_cr(flat(100 * (i + 1)), WindowCenter=200, WindowWidth=600), root / relative)
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "0"]) == 0
    report = _report(out)
    assert sorted(report) == sorted(["a/b.dcm", "a__b.dcm", f"a__b {suffix}"])
    assert len({row["output"] for row in report.values()}) == 3
    levels = [np.asarray(__import__("PIL.Image").Image.open(out / report[r]["output"])).mean()
              for r in ("a/b.dcm", f"a__b {suffix}", "a__b.dcm")]
    assert levels == sorted(levels) and len(set(levels)) == 3  # each output holds its own input


def test_an_earlier_run_s_outputs_are_refused_or_replaced_never_mixed(tmp_path, capsys):
    """A re-run at another size rewrote images under the old datalist (killed: sizes mixed), and a
    --deidentify re-run left the earlier run's identifiable file names beside its pseudonyms."""
    root = tmp_path / "in"
    root.mkdir()
    save(make_cr(), root / "patient_smith.dcm")
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--size", "8"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--size", "12", "--deidentify"]) == 2
    assert capsys.readouterr().err.endswith(f"\nerror: {out}: already holds datalist.json, report.csv from an earlier run; "
                                       "pass --overwrite to replace that run's outputs, or choose another --out\n")
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--size", "12", "--deidentify", "--overwrite"]) == 0
    names = [p.name for p in (out / "images").iterdir()]
    assert len(names) == 1 and names[0].startswith("cxr_") and "smith" not in (out / "datalist.json").read_text()


def test_overwrite_never_deletes_files_no_ingest_report_lists(tmp_path, capsys):
    """--out pointed at a folder whose images/ holds the user's own files (or a killed run's)."""
    root = tmp_path / "in"
    root.mkdir()
    save(make_cr(), root / "a.dcm")
    out = tmp_path / "project"
    (out / "images").mkdir(parents=True)
    mine = out / "images" / "my_annotated_xray.png"
    mine.write_bytes(b"precious")
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        assert main(["ingest-dicom", "--in", str(root), "--out", str(out), *extra]) == 2
        assert capsys.readouterr().err == (f"error: {out / 'images'}: holds 1 file(s) that no ingest report or journal in {out} "
                                           "lists (e.g. my_annotated_xray.png: a killed run's, or not ingest's); move "
                                           "them or choose another --out\n")
    assert mine.read_bytes() == b"precious" and not (out / "datalist.json").exists()


def _outputs(out):
    """Report, datalist items (image paths relative to OUT) and image bytes of a finished run."""
    items = json.loads((out / "datalist.json").read_text())["training"]
    for item in items:
        item["image"] = str(Path(item["image"]).relative_to(out))
    images = {p.name: p.read_bytes() for p in sorted((out / "images").iterdir())}
    return (out / "report.csv").read_text(), items, images


def _killed_at(monkeypatch, name, after_writing=False):
    """Make ``_ingest_one`` stop the run (as Ctrl-C would) at the file named ``name``; count its calls."""
    real, calls = ingest._ingest_one, []

    def stopping(path, *args, **kwargs):
        calls.append(path.name)
        if path.name == name:
            if after_writing:  # the image is written, the journal line is not
                real(path, *args, **kwargs)
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ingest, "_ingest_one", stopping)
    return calls


@pytest.mark.parametrize("after_writing", [False, True], ids=["before-writing", "after-writing"])
def test_a_killed_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(input_dir, tmp_path, monkeypatch,
                                                                                after_writing):
    options = ingest.IngestOptions(size=16)
    ingest.ingest_folder(input_dir, tmp_path / "whole", options)
    out = tmp_path / "out"
    calls = _killed_at(monkeypatch, "real1.dcm", after_writing)
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_folder(input_dir, out, options)
    assert (out / ingest.JOURNAL).is_file() and not (out / "datalist.json").exists()
    (out / "images" / ".real1.png.k1ll3d_x.tmp.png").write_bytes(b"half an image")  # as SIGKILL mid-write leaves
    calls.clear()
    monkeypatch.undo()
    calls = _killed_at(monkeypatch, "never")
    ingest.ingest_folder(input_dir, out, options)
    assert "ct.dcm" not in calls and "multiframe.dcm" not in calls and calls[0] == "real1.dcm"  # sorted order
    assert _outputs(out) == _outputs(tmp_path / "whole")
    assert not (out / ingest.JOURNAL).exists()


def test_a_killed_run_resumes_only_under_its_settings_and_overwrite_starts_over(input_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    _killed_at(monkeypatch, "real1.dcm", after_writing=True)
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_folder(input_dir, out, ingest.IngestOptions(size=16))
    monkeypatch.undo()
    capsys.readouterr()  # what the killed run logged is not this command's
    assert main(["ingest-dicom", "--in", str(input_dir), "--out", str(out), "--size", "12", "--workers", "0"]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {out / ingest.JOURNAL}: a killed ingest run with other settings (size=16, not 12); run again with "
        "its settings to resume it, or pass --overwrite to start over")
    assert main(["ingest-dicom", "--in", str(input_dir), "--out", str(out), "--size", "12", "--overwrite"]) == 0
    ingest.ingest_folder(input_dir, tmp_path / "whole", ingest.IngestOptions(size=12))
    assert _outputs(out) == _outputs(tmp_path / "whole")


def test_a_killed_run_is_not_resumed_from_another_input_folder(tmp_path, monkeypatch):
    """A copy of the archive elsewhere (same names, sizes and times: cp -p) is another source: its run
    starts over instead of taking the killed run's images, and the datalist's source, as its own."""
    first = tmp_path / "first"
    first.mkdir()
    for name in ("a.dcm", "b.dcm"):
        save(make_cr(), first / name)
    second = tmp_path / "second"
    shutil.copytree(first, second)  # copy2: times kept
    out = tmp_path / "out"
    _killed_at(monkeypatch, "b.dcm")
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_folder(first, out, ingest.IngestOptions())
    monkeypatch.undo()
    with pytest.raises(ValueError, match=re.escape(f"a killed ingest run with other settings (source='{first}', "
                                                   f"not '{second}')")):
        ingest.ingest_folder(second, out, ingest.IngestOptions())


def test_a_file_changed_since_it_was_journaled_is_ingested_again(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    for name, level in (("a.dcm", 100), ("b.dcm", 300)):
        save(make_cr(flat(level), WindowCenter=200, WindowWidth=400), root / name)
    out = tmp_path / "out"
    _killed_at(monkeypatch, "b.dcm")
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_folder(root, out, ingest.IngestOptions())
    monkeypatch.undo()
    save(make_cr(flat(250), WindowCenter=200, WindowWidth=400), root / "a.dcm")
    ingest.ingest_folder(root, out, ingest.IngestOptions())
    ingest.ingest_folder(root, tmp_path / "whole", ingest.IngestOptions())
    assert _outputs(out) == _outputs(tmp_path / "whole")


def test_the_image_of_a_file_renamed_since_it_was_journaled_does_not_outlive_it(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        save(make_cr(), root / name)
    out = tmp_path / "out"
    _killed_at(monkeypatch, "b.dcm")
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_folder(root, out, ingest.IngestOptions())
    monkeypatch.undo()
    (root / "a.dcm").rename(root / "a_renamed.dcm")
    ingest.ingest_folder(root, out, ingest.IngestOptions())
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a_renamed.png", "b.png", "c.png"]
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--overwrite", "--workers", "0"]) == 0


def test_outputs_do_not_depend_on_the_number_of_worker_processes(input_dir, tmp_path):
    for workers in (0, 2):
        ingest.ingest_folder(input_dir, tmp_path / f"w{workers}", ingest.IngestOptions(size=16), workers=workers)
    assert _outputs(tmp_path / "w0") == _outputs(tmp_path / "w2")
    report = _report(tmp_path / "w2")
    assert report["zz_duplicate.dcm"]["reason"] == "duplicate SOP Instance UID of sub/deeper/Doe_Jane_named.dcm"


def test_a_killed_deidentified_runs_journal_holds_no_input_path_or_uid(input_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _killed_at(monkeypatch, "zz_duplicate.dcm")
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_folder(input_dir, out, ingest.IngestOptions(deidentify=True))
    journal = (out / ingest.JOURNAL).read_text()
    names = sorted(ingest._output_name(p.relative_to(input_dir).as_posix(), True) for p in input_dir.rglob("*")
                   if p.is_file())
    before = names[:names.index(ingest._output_name("zz_duplicate.dcm", True))]  # in pseudonym order, not path order
    assert [json.loads(line)["name"] for line in journal.splitlines()[1:]] == before
    assert all(isinstance(json.loads(line)["stat"], str) for line in journal.splitlines()[1:])  # no size, no mtime
    uids = [str(pydicom.dcmread(p, force=True).get("SOPInstanceUID", "")) for p in input_dir.rglob("*.dcm")]
    for secret in ("real0", "Doe_Jane", "sub/", "lateral", str(input_dir), *filter(None, uids)):
        assert secret not in journal, secret


def test_a_file_that_kills_its_reading_process_is_skipped_and_the_batch_goes_on(tmp_path, monkeypatch, capsys):
    root = tmp_path / "in"
    root.mkdir()
    for i, name in enumerate(("a.dcm", "b_crash.dcm", "c.dcm", "d_exit.dcm", "e.dcm", "f.dcm", "g.dcm")):
        save(make_cr(flat(40 * i), WindowCenter=100, WindowWidth=400), root / name)
    ingest.ingest_folder(root, tmp_path / "whole", ingest.IngestOptions())
    monkeypatch.setattr(ingest, "_ingest_job", crash_on_named)  # pickled by name: the workers run it too
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "2"]) == 0
    assert capsys.readouterr().out.startswith("ingested 5 of 7 files (2 skipped)")
    report = _report(out)
    for name, how in (("b_crash.dcm", "SIGSEGV"), ("d_exit.dcm", "exit code 3")):
        assert report[name]["reason"] == (f"the process reading it died ({how}): a corrupt file, a decoder bug or "
                                          "too little memory")
    _, items, images = _outputs(out)
    _, whole_items, whole_images = _outputs(tmp_path / "whole")
    assert items == [item for item in whole_items if item["id"] not in ("b_crash", "d_exit")]
    assert images == {name: data for name, data in whole_images.items() if name not in ("b_crash.png", "d_exit.png")}
    assert not (out / ingest.JOURNAL).exists()


def _deidentified_run(root, out, capsys, caplog):
    """``ingest-dicom --deidentify --workers 0``: its stderr, and every warning and pydicom log line."""
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--deidentify", "--workers", "0"]) == 0
    said = [str(w.message) for w in caught] + [record.getMessage() for record in caplog.records]
    return capsys.readouterr().err, said


def test_deidentify_prints_no_element_value_skips_burned_in_text_and_lists_in_pseudonym_order(tmp_path, capsys,
                                                                                              caplog):
    root = tmp_path / "in"
    odd_uid = "1.2.826.0.1.99887766.0123.7"  # a leading zero: pydicom warns, quoting it
    for folder, attributes in (("4711042", {"SOPInstanceUID": odd_uid}), ("4711043", {"BurnedInAnnotation": "YES"}),
                               ("4711044", {}), (os.fsdecode(b"M\xfcller"), {})):  # a Latin-1 folder name
        (root / folder).mkdir(parents=True)
        save(make_cr(**attributes), root / folder / "IM1.dcm")
    plain = tmp_path / "plain"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ingest.ingest_folder(root, plain, ingest.IngestOptions())
    assert any(odd_uid in str(w.message) for w in caught)  # the input does make pydicom quote the UID
    assert "M\\xfcller/IM1.dcm" in (plain / "report.csv").read_text()
    capsys.readouterr()  # what writing the inputs printed

    err, said = _deidentified_run(root, tmp_path / "out", capsys, caplog)
    assert err.startswith("warning: --deidentify without --pseudonym-key-file: each pseudonym is a plain SHA-256")
    assert not [line for line in said + [err] if "99887766" in line or "4711" in line]
    report = list(_report(tmp_path / "out").values())
    assert [row["file"] for row in report] == sorted(row["file"] for row in report)  # not the archive's MRN order
    burned = ingest._output_name("4711043/IM1.dcm", True)
    assert {row["file"]: row["status"] for row in report} == {
        ingest._output_name(p.relative_to(root).as_posix(), True): "skipped" if "4711043" in str(p) else "ok"
        for p in root.rglob("*.dcm")}
    assert _report(tmp_path / "out")[burned]["reason"] == (
        "BurnedInAnnotation is YES: its pixels may show identifying text, so it is not written with --deidentify")


def test_a_skipped_file_s_reason_names_it_by_its_pseudonym_even_where_python_escapes_the_path(tmp_path, monkeypatch,
                                                                                              capsys):
    root = tmp_path / "in"
    root.mkdir()
    save(make_cr(), root / "a.dcm")
    gone = [root / "C:\\export\\4711042\\IM1.dcm", root / "O'Brien \"Pat\" 4711043.dcm"]  # listed, then purged
    monkeypatch.setattr(ingest, "_files_under", lambda *_, **__: sorted([root / "a.dcm", *gone]))
    assert main(["ingest-dicom", "--in", str(root), "--out", str(tmp_path / "out"), "--deidentify", "--workers", "0"]) == 0
    capsys.readouterr()
    text = (tmp_path / "out" / "report.csv").read_text()
    assert "4711042" not in text and "4711043" not in text and "Brien" not in text
    for path in gone:
        name = ingest._output_name(path.relative_to(root).as_posix(), True)
        assert _report(tmp_path / "out")[name]["reason"].endswith(f"No such file or directory: '{name}')")


def test_a_second_run_into_an_output_folder_in_use_is_refused_before_it_deletes_anything(tmp_path, capsys,
                                                                                        hold_folder):
    """A job submitted twice: the second run's --overwrite deleted images the first had listed in its datalist."""
    root = tmp_path / "in"
    root.mkdir()
    save(make_cr(), root / "a.dcm")
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "0"]) == 0

    def files():
        return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".cxrdoll.lock"}

    before = files()
    pid = hold_folder(out)
    capsys.readouterr()
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--overwrite", "--workers", "0"]) == 2
    assert f"error: {out}: another ingest-dicom run is writing here (process {pid}" in capsys.readouterr().err
    assert files() == before


def test_views_and_burned_in_images_are_skipped_before_their_pixels_are_decoded(tmp_path):
    """A lateral (a third of a chest archive) costs no decode; its header still fills the report."""
    root = tmp_path / "in"
    root.mkdir()
    lateral = make_cr(np.zeros((40, 30), np.uint16), ViewPosition="LL")
    burned = make_cr(np.zeros((40, 30), np.uint16), BurnedInAnnotation="YES")
    for ds in (lateral, burned):
        ds.PixelData = ds.PixelData[:100]  # would fail to decode: "pixel data could not be decoded"
    save(lateral, root / "lateral.dcm")
    save(burned, root / "burned.dcm")
    out = tmp_path / "out"
    ingest.ingest_folder(root, out, ingest.IngestOptions(deidentify=True))
    rows = sorted((row["reason"], row["rows"], row["cols"], row["voi"]) for row in _report(out).values())
    assert rows == [
        ("BurnedInAnnotation is YES: its pixels may show identifying text, so it is not written with --deidentify",
         "40", "30", ""),
        ("not a frontal view (LATERAL from ViewPosition)", "40", "30", ""),
    ]


def test_a_blank_image_is_skipped_with_its_reason(tmp_path):
    """A constant DICOM (a failed exposure or export) was written as an all-black PNG with status ok."""
    root = tmp_path / "in"
    root.mkdir()
    save(make_cr(np.zeros((40, 30), np.uint16)), root / "blank.dcm")
    save(make_cr(), root / "good.dcm")
    out = tmp_path / "out"
    ingest.ingest_folder(root, out, ingest.IngestOptions())
    report = _report(out)
    assert (report["blank.dcm"]["status"], report["blank.dcm"]["reason"]) == (
        "skipped", "every pixel has the value 0 after rescale: a blank image")
    assert report["good.dcm"]["status"] == "ok" and sorted(p.name for p in (out / "images").iterdir()) == ["good.png"]


def test_a_run_that_ingests_nothing_exits_1_pointing_to_its_report(tmp_path, capsys):
    """It exited 0, so a script went on to train on an empty datalist."""
    root = tmp_path / "in"
    root.mkdir()
    save(make_cr(np.zeros((40, 30), np.uint16)), root / "blank.dcm")
    save(make_cr(ViewPosition="LL"), root / "lateral.dcm")
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "0"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("ingested 0 of 2 files (2 skipped)")
    assert captured.err == f"error: no file under {root} was ingested; why each was skipped: {out}/report.csv\n"
    assert sorted(_report(out)) == ["blank.dcm", "lateral.dcm"]
    assert json.loads((out / "datalist.json").read_text())["training"] == []


def test_a_deidentified_run_that_ingests_nothing_does_not_print_its_input_folder(tmp_path, capsys):
    """--deidentify prints no input path: the folder may be named by an MRN, as a one-patient export is."""
    root = tmp_path / "in" / "00731942"
    root.mkdir(parents=True)
    save(make_cr(np.zeros((40, 30), np.uint16)), root / "blank.dcm")
    out = tmp_path / "out"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "0", "--deidentify"]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"error: no file was ingested; why each was skipped: {out}/report.csv\n")
    assert "00731942" not in err


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # 'yes': the non-conformant value under test
def test_burned_in_annotation_is_read_whatever_its_case_or_padding(tmp_path):
    """CS values are upper case by the standard, but archives hold 'yes' and ' YES': either still means
    identifying text in the pixels, never written under --deidentify."""
    root = tmp_path / "in"
    root.mkdir()
    for name, flag in (("lower.dcm", "yes"), ("padded.dcm", " YES"), ("no.dcm", "NO")):
        save(make_cr(flat(0, (40, 30)), BurnedInAnnotation=flag), root / name)
    out = tmp_path / "out"
    ingest.ingest_folder(root, out, ingest.IngestOptions(deidentify=True))
    statuses = {row["file"]: row["status"] for row in _report(out).values()}
    assert statuses == {ingest._output_name("lower.dcm", True): "skipped",
                        ingest._output_name("padded.dcm", True): "skipped",
                        ingest._output_name("no.dcm", True): "ok"}
    ingest.ingest_folder(root, out, ingest.IngestOptions(), overwrite=True)  # only --deidentify leaves them out
    assert {row["status"] for row in _report(out).values()} == {"ok"}


def test_a_killed_keyed_runs_journal_holds_no_plain_hash_of_a_uid_or_of_a_files_size_and_time(tmp_path, monkeypatch):
    """With a pseudonym key the journal's tokens are keyed too: a plain SHA-256 of a SOP Instance UID
    or of a file's size and mtime can be recomputed from the archive, naming the file behind each entry."""
    import hashlib

    root = tmp_path / "in"
    root.mkdir()
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        save(make_cr(), root / name)
    out = tmp_path / "out"
    key = b"correct horse"
    _killed_at(monkeypatch, max(("a.dcm", "b.dcm", "c.dcm"), key=lambda n: ingest._output_name(n, True, key)))
    with pytest.raises(KeyboardInterrupt):  # at the last file in pseudonym order
        ingest.ingest_folder(root, out, ingest.IngestOptions(deidentify=True, pseudonym_key=key))
    entries = [json.loads(line) for line in (out / ingest.JOURNAL).read_text().splitlines()[1:]]
    assert len(entries) == 2 and all(entry["uid"] and entry["stat"] for entry in entries)
    for path in root.iterdir():
        st = path.stat()
        plain = [hashlib.sha256(str(pydicom.dcmread(path).SOPInstanceUID).encode()).hexdigest()[:32],
                 hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32]]
        assert not [entry for entry in entries if entry["uid"] in plain or entry["stat"] in plain], path.name


def _seven_files(root):
    root.mkdir()
    for i, name in enumerate(("a.dcm", "b.dcm", "c.dcm", "d_full.dcm", "e.dcm", "f.dcm", "g.dcm")):
        save(make_cr(flat(40 * i), WindowCenter=100, WindowWidth=400), root / name)
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_a_full_disk_stops_the_run_naming_the_image_and_the_same_command_then_resumes(tmp_path, monkeypatch, capsys,
                                                                                      workers):
    root = _seven_files(tmp_path / "in")
    ingest.ingest_folder(root, tmp_path / "whole", ingest.IngestOptions())
    monkeypatch.setattr(ingest, "_ingest_job", full_disk_on_named)  # pickled by name: the workers run it too
    out = tmp_path / "out"
    command = ["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", str(workers)]
    assert main(command) == 2  # was 0: "ingested 6 of 7 files (1 skipped)", the full disk as d_full.dcm's fault
    assert capsys.readouterr().err == f"error: {out / 'images' / 'd_full.png'}: No space left on device\n"
    assert not (out / "datalist.json").exists() and not (out / "report.csv").exists()
    journaled = [json.loads(line)["name"] for line in (out / ingest.JOURNAL).read_text().splitlines()[1:]]
    assert "d_full" not in journaled and journaled[:3] == ["a", "b", "c"]
    monkeypatch.undo()  # space freed: the same command goes on where it stopped
    assert main(command) == 0
    assert capsys.readouterr().out.startswith("ingested 7 of 7 files (0 skipped)")
    assert _outputs(out) == _outputs(tmp_path / "whole")


def test_a_datalist_or_journal_that_cannot_be_written_stops_the_run_naming_it(tmp_path, monkeypatch, capsys):
    root = _seven_files(tmp_path / "in")
    ingest.ingest_folder(root, tmp_path / "whole", ingest.IngestOptions())
    out = tmp_path / "out"
    command = ["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "0"]

    def no_space(*_, **__):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ingest, "write_datalist", no_space)
    assert main(command) == 2
    assert capsys.readouterr().err == f"error: {out / 'datalist.json'}: No space left on device\n"
    monkeypatch.undo()
    real_write, writes = os.write, []

    def torn_write(fd, data):  # the disk fills up halfway through the third journal entry
        writes.append(fd)
        if len(writes) == 3:
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    shutil.rmtree(out)
    monkeypatch.setattr(ingest.os, "write", torn_write)
    assert main(command) == 2
    assert capsys.readouterr().err == f"error: {out / ingest.JOURNAL}: No space left on device\n"
    monkeypatch.undo()
    assert main(command) == 0
    assert _outputs(out) == _outputs(tmp_path / "whole")


@pytest.mark.parametrize("cut", ["half", "line end"])
def test_a_resumed_run_trims_the_journal_line_a_kill_cut_in_half_before_it_appends(tmp_path, monkeypatch, cut):
    root = _seven_files(tmp_path / "in")
    ingest.ingest_folder(root, tmp_path / "whole", ingest.IngestOptions())
    out = tmp_path / "out"
    _killed_at(monkeypatch, "f.dcm")
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_folder(root, out, ingest.IngestOptions())
    journal = out / ingest.JOURNAL
    lines = journal.read_bytes().split(b"\n")  # header, a..e, ""
    # d_full's line cut in half, or whole but for its line end (it parses, yet the next entry would join it)
    torn = lines[4][: len(lines[4]) // 2] if cut == "half" else lines[4]
    journal.write_bytes(b"\n".join(lines[:4]) + b"\n" + torn)
    monkeypatch.undo()
    _killed_at(monkeypatch, "g.dcm")  # the resumed run journals c..f, then is killed too
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_folder(root, out, ingest.IngestOptions())
    entries = [json.loads(line)["name"] for line in journal.read_text().splitlines()[1:]]  # each line whole
    assert entries == ["a", "b", "c", "d_full", "e", "f"]
    monkeypatch.undo()
    calls = _killed_at(monkeypatch, "never")
    ingest.ingest_folder(root, out, ingest.IngestOptions())
    assert calls == ["g.dcm"]
    assert _outputs(out) == _outputs(tmp_path / "whole")


def test_keep_duplicates_keeps_a_repeated_sop_instance_uid(tmp_path, capsys):
    """Without --keep-duplicates the second file of one SOP Instance UID is skipped naming the first;
    with it both are ingested. A ``.DICOM`` suffix is dropped from the output name as ``.dcm`` is."""
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    first = save(make_cr(flat(100)), root / "first.dcm")
    save(make_cr(flat(200), SOPInstanceUID=pydicom.dcmread(first).SOPInstanceUID), root / "second.DICOM")
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "0"]) == 0
    assert _report(out)["second.DICOM"]["reason"] == "duplicate SOP Instance UID of first.dcm"
    assert main(["ingest-dicom", "--in", str(root), "--out", str(out), "--workers", "0", "--overwrite",
                 "--keep-duplicates"]) == 0
    assert [row["output"] for row in _report(out).values()] == ["images/first.png", "images/second.png"]


def test_names_differing_only_in_case_get_distinct_outputs_and_an_output_folder_inside_the_input_is_no_input(tmp_path):
    """'Scan.dcm' and 'scan.dcm' would share one image on a case-insensitive file system; an --out
    inside --in (run again with --overwrite) must not be read as input."""
    root = tmp_path / "in"
    root.mkdir()
    for name, level in (("Scan.dcm", 100), ("scan.dcm", 200)):
        save(make_cr(flat(level, (16, 12))), root / name)
    for overwrite in (False, True):
        rows = ingest.ingest_folder(root, root / "out", ingest.IngestOptions(), overwrite=overwrite)
        assert [row.file for row in rows] == ["Scan.dcm", "scan.dcm"]
    outputs = [row.output.lower() for row in rows]
    assert outputs[0] == "images/scan.png" and len(set(outputs)) == 2
    assert [(row.rows, row.cols) for row in rows] == [(16, 12), (16, 12)]  # the report's rows and columns
