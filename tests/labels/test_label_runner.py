"""The labelling loop: outputs, skip report, re-run, sharding, settings and source guards, kill-and-resume, visuals."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.labels.runner import LabelResult, LabelRunner, _changed_sources_message
from cxrdoll.labels.visuals import OverlayWriter, TensorBoardLabelImages
from cxrdoll.labels.writer import label_path, read_label, read_report, read_sources, shard_path
from cxrdoll.networks import build_classifier
from tests.labels.tiny_setup import CARDIO, EDEMA, EFFUSION, make_images, tiny_setup, write_classifiers, write_datalist

PROJECT = Path(__file__).resolve().parents[2]
OPTIONS = {"explainer": "doll_ig", "explainer_options": {"steps": 4}, "image_size": 32, "min_agree": 2,
           "confidence_power": 1.0, "progress": False}


def _label_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.npz"))
            if not p.name.startswith(".")}


def _recorded(folder: Path) -> dict[str, str]:
    """id -> the image its label was recorded as made from."""
    return {item_id: record["image"] for item_id, record in read_sources(folder).items()}


def _good_images(datalist: Path) -> dict[str, str]:
    doc = json.loads(Path(datalist).read_text())
    return {item["id"]: item["image"] for items in (doc["training"], doc["validation"]) for item in items
            if not item["id"].startswith("bad/")}


@pytest.fixture(scope="module")
def setup(one_thread, tmp_path_factory):
    """8 good images, one corrupt PNG and one missing file; and an uninterrupted reference run."""
    root = tmp_path_factory.mktemp("tiny")
    items = make_images(root, 8, size=40)
    corrupt = root / "images" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    raw = items[0]["raw_label"]
    items.insert(3, {"image": str(corrupt), "id": "bad/corrupt.png", "raw_label": raw})
    items.append({"image": str(root / "images" / "gone.png"), "id": "bad/gone.png", "raw_label": raw})
    classifiers, datalist = write_classifiers(root), write_datalist(root, items, n_validation=2)
    reference = root / "reference"
    summary = LabelRunner(classifiers, datalist, reference, **OPTIONS).run()
    return classifiers, datalist, reference, summary


def test_reference_run_outputs(setup):
    classifiers, datalist, reference, summary = setup
    assert summary == {"rank": 0, "world_size": 1, "images": 10, "written": 8, "skipped": 2,
                       "empty_positive_masks": 0, "finalised": True}
    files = _label_files(reference)
    assert len(files) == 8
    label = read_label(reference / "tiny/patient00000/study1/view1_frontal.npz")
    assert label["mask"].shape == (14, 32, 32) and label["mask"].dtype == np.uint8
    assert label["state"][CARDIO] == 1 and label["state"][EDEMA] == 1
    assert label["mask"][CARDIO].any() and not label["mask"][label["state"] != 1].any()
    assert 0 < float(label["soft"][CARDIO].max()) <= 1.0  # a weighted mean of maps each peaking at 1
    assert float(label["soft"][EDEMA].max()) == 1.0  # one model: its own normalised map
    odd = read_label(reference / "tiny/patient00001/study1/view1_frontal.npz")
    assert odd["state"][EDEMA] == 0 and not odd["mask"][EDEMA].any()

    report = read_report(reference / "report.csv")
    assert [r["id"] for r in report] == ["bad/corrupt.png", "bad/gone.png"]
    assert report[1]["reason"] == f"FileNotFoundError: {report[1]['image']}: file not found"
    assert report[0]["reason"] == "OSError: Truncated File Read"  # PIL's own words, not MONAI's reader list

    out = json.loads((reference / "datalist.json").read_text())
    assert [len(out["training"]), len(out["validation"])] == [7, 1]  # the missing file was in validation
    assert out["training"][0]["label"].endswith("tiny/patient00000/study1/view1_frontal.npz")
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["counts"] == {**manifest["counts"], "images": 10, "labelled": 8, "skipped": 2}
    assert manifest["counts"]["positives"]["Cardiomegaly"] == 8
    assert manifest["selection"]["Cardiomegaly"] == ["densenet_tiny_0", "densenet_tiny_1"]
    assert manifest["selection"]["Edema"] == ["densenet_tiny_0"]
    assert manifest["tau"] == 0.7 and manifest["binarise"] == {"method": "otsu", "value": None}


def test_an_unlabelled_image_is_targeted_by_the_mean_of_every_used_classifier(setup, tmp_path):
    """ensemble_predicted: Cardiomegaly at 0.3 and 0.9 (mean 0.6) and Pleural Effusion at 0.95 and 0.2
    (mean 0.575) are targets; Edema at 0.9 and 0.05 (mean 0.475) is not: neither classifier alone agrees."""
    classifiers, datalist, _, _ = setup
    runner = LabelRunner(classifiers, datalist, tmp_path / "out", policy="ensemble_predicted", **OPTIONS)
    assert sorted(runner.used) == [0, 1]
    probs = {k: torch.full((1, len(OBSERVATIONS)), 0.1) for k in (0, 1)}
    probs[0][0, CARDIO], probs[1][0, CARDIO] = 0.3, 0.9
    probs[0][0, EDEMA], probs[1][0, EDEMA] = 0.9, 0.05
    probs[0][0, EFFUSION], probs[1][0, EFFUSION] = 0.95, 0.2
    runner.probabilities = lambda images: probs
    (_, _, state), = runner.label_batch(torch.rand(1, 1, 32, 32), [[None] * len(OBSERVATIONS)])
    assert np.flatnonzero(state == 1).tolist() == sorted([CARDIO, EFFUSION]) and state[EDEMA] == -1


def test_rerun_skips_finished_images_and_changes_nothing(setup):
    classifiers, datalist, reference, _ = setup
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*.npz")}
    summary = LabelRunner(classifiers, datalist, reference, **OPTIONS).run()
    assert summary["written"] == 0 and summary["skipped"] == 2  # unreadable inputs are retried and listed again
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("*.npz")} == before


def test_two_shards_give_the_same_files_as_one_run(setup, tmp_path):
    classifiers, datalist, reference, _ = setup
    first = LabelRunner(classifiers, datalist, tmp_path, rank=1, world_size=2, **OPTIONS).run()
    assert first["images"] == 5 and not first["finalised"] and not (tmp_path / "datalist.json").exists()
    second = LabelRunner(classifiers, datalist, tmp_path, rank=0, world_size=2, **OPTIONS).run()
    assert second["finalised"]
    assert _label_files(tmp_path) == _label_files(reference)
    assert (tmp_path / "report.csv").read_text() == (reference / "report.csv").read_text()
    assert json.loads((tmp_path / "datalist.json").read_text())["training"] == [
        {**d, "label": d["label"].replace(str(reference), str(tmp_path))}
        for d in json.loads((reference / "datalist.json").read_text())["training"]
    ]


def test_a_record_from_an_earlier_run_does_not_finalise_while_a_shard_has_images_to_label(setup, tmp_path):
    classifiers, datalist, reference, _ = setup
    for rank in (1, 0):
        LabelRunner(classifiers, datalist, tmp_path, rank=rank, world_size=2, **OPTIONS).run()
    finished = {name: (tmp_path / name).read_bytes() for name in ("datalist.json", "manifest.json", "report.csv")}
    shard_1 = LabelRunner(classifiers, datalist, tmp_path, rank=1, world_size=2, **OPTIONS)
    label_path(tmp_path, shard_1.shard_items()[0]["id"]).unlink()  # to be labelled again, as the finalise error says

    # Rank 0 finishes first: rank 1's record from the first run must not stand in for its unfinished shard.
    assert not LabelRunner(classifiers, datalist, tmp_path, rank=0, world_size=2, **OPTIONS).run()["finalised"]
    assert {name: (tmp_path / name).read_bytes() for name in finished} == finished

    record, records_seen = shard_path(tmp_path, 1, 2), []
    shard_1.handlers = [lambda result: records_seen.append(record.exists())]
    assert shard_1.run()["finalised"] and records_seen == [False]  # its old record was gone while it labelled
    assert _label_files(tmp_path) == _label_files(reference)
    assert (tmp_path / "report.csv").read_text() == (reference / "report.csv").read_text()


def test_a_run_stopped_before_its_first_label_leaves_the_folder_to_the_corrected_settings(setup, tmp_path):
    classifiers, datalist, reference, _ = setup
    with pytest.raises(ValueError, match="binarisation 'top_q' needs a value"):  # only checked on the first image
        LabelRunner(classifiers, datalist, tmp_path, **{**OPTIONS, "binarise_method": "top_q"}).run()
    assert LabelRunner(classifiers, datalist, tmp_path, **OPTIONS).run()["written"] == 8
    assert _label_files(tmp_path) == _label_files(reference)
    with pytest.raises(ValueError, match=r"differ in \['binarise'\]\); use a new output_dir or empty this one "
                                         r"\(its labels and .shards/\)"):
        LabelRunner(classifiers, datalist, tmp_path, **{**OPTIONS, "binarise_method": "top_q",
                                                        "binarise_value": 10}).run()


def test_the_manifest_names_every_code_version_that_wrote_labels(setup, tmp_path, monkeypatch):
    """A run stopped part-way and finished by a later commit: its labels are not only the later one's."""
    classifiers, datalist, reference, _ = setup
    version = {"cxrdoll": "0.1.0", "git_commit": "a" * 40}
    monkeypatch.setattr("cxrdoll.labels.writer.code_version", lambda: dict(version))

    class Stop(Exception):
        pass

    seen = []

    def stop_after_two(result):
        seen.append(result)
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        LabelRunner(classifiers, datalist, tmp_path, handlers=[stop_after_two], **OPTIONS).run()
    version["git_commit"] = "b" * 40
    assert LabelRunner(classifiers, datalist, tmp_path, **OPTIONS).run()["finalised"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["code_version"] == {"cxrdoll": "0.1.0", "git_commit": "b" * 40}
    assert manifest["label_code_versions"] == [{"cxrdoll": "0.1.0", "git_commit": c * 40} for c in "ab"]
    assert _label_files(tmp_path) == _label_files(reference)

    version["git_commit"] = "c" * 40  # a re-run that labels nothing adds no version
    LabelRunner(classifiers, datalist, tmp_path, **OPTIONS).run()
    assert json.loads((tmp_path / "manifest.json").read_text())["label_code_versions"] == manifest["label_code_versions"]


def test_resuming_with_other_settings_is_refused(setup):
    classifiers, datalist, reference, _ = setup
    with pytest.raises(ValueError, match=r"holds labels made with different settings \(differ in \['selection', 'tau'\]\)"):
        LabelRunner(classifiers, datalist, reference, **{**OPTIONS, "tau": 0.9}).run()


def test_resuming_with_retrained_classifiers_is_refused(one_thread, tmp_path):
    """Same registry paths, new weights or new AUROCs (a sweep re-run into the same folder): not the same labels."""
    classifiers, datalist = tiny_setup(tmp_path / "data", n=2)
    registry = json.loads(classifiers.read_text())
    registry["classifiers"][0]["auroc"]["Fracture"] = None  # undefined (one class in validation): not a change
    classifiers.write_text(json.dumps(registry))
    LabelRunner(classifiers, datalist, tmp_path / "labels", **OPTIONS).run()
    assert LabelRunner(classifiers, datalist, tmp_path / "labels", **OPTIONS).run()["written"] == 0
    assert "NaN" not in (tmp_path / "labels" / "manifest.json").read_text()
    refused = r"holds labels made with different settings \(differ in \['classifiers'\]\)"
    checkpoint = tmp_path / "data" / "model0.pt"
    original = checkpoint.read_bytes()
    torch.manual_seed(99)
    torch.save(build_classifier("densenet_tiny").state_dict(), checkpoint)
    with pytest.raises(ValueError, match=refused):
        LabelRunner(classifiers, datalist, tmp_path / "labels", **OPTIONS).run()
    checkpoint.write_bytes(original)
    registry = json.loads(classifiers.read_text())
    registry["classifiers"][1]["auroc"]["Cardiomegaly"] = 0.95  # same selection, other distillation weights
    classifiers.write_text(json.dumps(registry))
    with pytest.raises(ValueError, match=refused):
        LabelRunner(classifiers, datalist, tmp_path / "labels", **OPTIONS).run()


def test_relative_image_paths_resolve_against_the_datalists_folder(one_thread, tmp_path, monkeypatch):
    """As for the classifier and the segmentation datalists, not against the working directory; the labels'
    datalist then names the images absolutely, as it does for a datalist that gives absolute paths."""
    classifiers, datalist = tiny_setup(tmp_path / "data", n=2)
    absolute = _good_images(datalist)
    datalist.write_text(datalist.read_text().replace(str((tmp_path / "data").resolve()) + "/", ""))
    assert not any(Path(p).is_absolute() for p in _good_images(datalist).values())
    monkeypatch.chdir(tmp_path)
    assert LabelRunner(classifiers, datalist, tmp_path / "labels", **OPTIONS).run()["written"] == 2
    assert _good_images(tmp_path / "labels" / "datalist.json") == absolute == _recorded(tmp_path / "labels")


def test_dicom_images_are_labelled_as_the_classifiers_read_them(one_thread, tmp_path):
    """The classifier trains on DICOM items; the labeller skipped each one ("cannot identify image file")."""
    from tests.dicom.synthetic_dicom import make_cr, save

    root = tmp_path / "data"
    items = make_images(root, 3, size=40)
    for item, frames in zip(items[:2], (1, 2)):
        pixels = np.asarray(Image.open(item["image"])).astype(np.uint16) * 16
        dicom = Path(item["image"]).with_suffix(".dcm")
        save(make_cr(pixels, NumberOfFrames=frames) if frames > 1 else make_cr(pixels), dicom)
        item.update(image=str(dicom), id=item["id"].replace(".png", ".dcm"))
    classifiers, datalist = write_classifiers(root), write_datalist(root, items, n_validation=1)
    summary = LabelRunner(classifiers, datalist, tmp_path / "labels", **OPTIONS).run()
    assert (summary["written"], summary["skipped"]) == (2, 1)
    assert read_label(label_path(tmp_path / "labels", items[0]["id"]))["mask"].shape == (14, 32, 32)
    (skip,) = read_report(tmp_path / "labels" / "report.csv")
    assert skip["id"] == items[1]["id"]
    assert skip["reason"] == (f"DicomInputError: {items[1]['image']}: is multi-frame (2 frames); "
                              "expected a single-frame radiograph")


def test_non_finite_attributions_stop_the_run_before_a_label_is_written(setup, tmp_path):
    classifiers, datalist, _, _ = setup
    runner = LabelRunner(classifiers, datalist, tmp_path, **OPTIONS)
    runner._load()
    for explainer in runner._explainers.values():  # as an fp16 overflow would leave them
        explainer.attribute = lambda images, targets, real=explainer.attribute: [
            m * float("nan") for m in real(images, targets)]
    with pytest.raises(ValueError, match=r"classifier 'densenet_tiny_0' gave a non-finite ig map for "
                                         r"\['Cardiomegaly', 'Edema'\]"):
        runner.run()
    assert not list(tmp_path.rglob("*.npz"))


def test_bad_configuration_is_refused(setup, tmp_path):
    classifiers, datalist, _, _ = setup
    with pytest.raises(ValueError, match="unknown explainer 'lime'"):
        LabelRunner(classifiers, datalist, tmp_path, explainer="lime")
    with pytest.raises(ValueError, match="tau 70 is a validation-AUROC threshold: expected a number from 0 to 1"):
        LabelRunner(classifiers, datalist, tmp_path, tau=70)
    with pytest.raises(ValueError, match="rank 2 is outside world_size 2"):
        LabelRunner(classifiers, datalist, tmp_path, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):  # not DataLoader's error at run time
        LabelRunner(classifiers, datalist, tmp_path, batch_size=0)
    # the ends of 'a number from 0 to 1' are numbers from 0 to 1
    LabelRunner(classifiers, datalist, tmp_path, tau=1.0, agree_threshold=1.0, predict_threshold=1.0)
    LabelRunner(classifiers, datalist, tmp_path, tau=0.0, agree_threshold=0.0, predict_threshold=0.0)
    for name, what in (("agree_threshold", "a threshold on maps scaled to"),
                       ("predict_threshold", "a threshold on predicted probabilities")):
        with pytest.raises(ValueError, match=f"{name} 50.0 is {what}.*: expected a number from 0 to 1"):
            LabelRunner(classifiers, datalist, tmp_path, **{name: 50.0})
    with pytest.raises(ValueError, match=r"datalist.json: no section 'valid'; it has \['validation'\] besides the "
                                         r"sections asked for \(\['training', 'valid'\]\): check --sections"):
        LabelRunner(classifiers, datalist, tmp_path, sections=("training", "valid"))
    one_section = tmp_path / "training_only.json"
    one_section.write_text(json.dumps({"training": []}))
    with pytest.raises(ValueError, match=r"training_only.json: no items in sections \['training', 'validation'\]"):
        LabelRunner(classifiers, one_section, tmp_path)
    organs = tmp_path / "organs.json"  # another stage's datalist: every item would be skipped, and the run exit 0
    organs.write_text(json.dumps({"training": [{"image": "a.png", "id": "a", "label": ["a_lung.png"]}]}))
    with pytest.raises(ValueError, match=r"organs.json: no item has 'raw_label' \(its first item has a 'label' of 1 "
                                         r"mask file: a downstream segmentation datalist\); the labeller takes a "
                                         r"classification datalist with the raw labels \(1/0/-1/blank\) in "
                                         r"'raw_label': 'python -m cxrdoll prepare-chexpert' writes one"):
        LabelRunner(classifiers, organs, tmp_path)


def test_killed_run_resumes_to_identical_files(setup, tmp_path):
    classifiers, datalist, reference, _ = setup
    out = tmp_path / "killed"
    # A handler that sleeps after each image keeps the run slow enough to be killed half way.
    script = textwrap.dedent(f"""
        import time
        from cxrdoll.labels.runner import LabelRunner
        options = {OPTIONS!r}
        LabelRunner({str(classifiers)!r}, {str(datalist)!r}, {str(out)!r},
                    handlers=[lambda result: time.sleep(0.5)], **options).run()
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(_label_files(out) if out.exists() else {}) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the labelling subprocess wrote nothing within 240 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(_label_files(out))
    assert 2 <= done < 8 and not (out / "datalist.json").exists()

    summary = LabelRunner(classifiers, datalist, out, **OPTIONS).run()
    assert summary["written"] == 8 - done and summary["finalised"]
    assert _label_files(out) == _label_files(reference)
    assert _recorded(out) == _good_images(datalist)  # the killed run's records were kept


def test_labels_made_from_other_images_behind_the_same_ids_are_refused(setup, tmp_path):
    """Regenerated images (``synth --seed 5``: same ids, new pixels) into a copy of a finished folder."""
    classifiers, datalist, reference, _ = setup
    out = tmp_path / "labels"
    shutil.copytree(reference, out)
    items = make_images(tmp_path / "new", 8, size=40, seed=5)
    regenerated = write_datalist(tmp_path / "new", items, n_validation=2)
    label = label_path(out, items[0]["id"])
    old_image, new_image = _good_images(datalist)[items[0]["id"]], items[0]["image"]
    with pytest.raises(ValueError, match=(
            rf"^{re.escape(str(out))}: 8 label file\(s\) were made from other images than the datalist now names "
            rf"under their ids: {re.escape(str(label))} was made from {re.escape(old_image)} \(\d+ bytes, modified "
            rf"[^)]+\), the datalist names {re.escape(new_image)} \(\d+ bytes, modified [^)]+\) \(path( / size)? / "
            rf"modification time differ\); also {re.escape(str(label_path(out, items[1]['id'])))}, .*, \.\.\.; "
            r"delete those label files to label their images again, or use a new output_dir$")):
        LabelRunner(classifiers, regenerated, out, **OPTIONS).run()
    assert _label_files(out) == _label_files(reference)
    assert not shard_path(out, 0, 1).exists()  # nothing left that would finalise the folder


def test_images_moved_with_their_times_or_through_a_symlink_keep_their_labels(setup, tmp_path):
    classifiers, datalist, reference, _ = setup
    doc = json.loads(datalist.read_text())
    images = next(Path(i["image"]).parent for i in doc["training"] if i["id"] == "bad/corrupt.png")  # every image's root
    assert all(p.startswith(str(images)) for p in _good_images(datalist).values())
    moved, linked = tmp_path / "moved", tmp_path / "linked"
    shutil.copytree(images, moved)  # copy2: times kept, as mv or rsync -t
    linked.symlink_to(images, target_is_directory=True)
    for root in (moved, linked):
        text = datalist.read_text().replace(str(images), str(root))
        other = tmp_path / f"{root.name}.json"
        other.write_text(text)
        out = tmp_path / f"labels_{root.name}"
        shutil.copytree(reference, out)
        summary = LabelRunner(classifiers, other, out, **OPTIONS).run()
        assert summary["written"] == 0 and summary["finalised"]
        assert _label_files(out) == _label_files(reference)


def test_an_image_rewritten_in_place_is_refused_until_its_label_is_deleted(one_thread, tmp_path):
    """Re-ingested DICOM: same id and path, new pixels. Its label deleted, the image is labelled again;
    that record then wins over the old one, also in a run of another world size."""
    classifiers, datalist = tiny_setup(tmp_path / "data", n=2)
    out = tmp_path / "labels"
    for rank in (0, 1):
        LabelRunner(classifiers, datalist, out, rank=rank, world_size=2, **OPTIONS).run()
    image, item_id = next(iter(_good_images(datalist).items()))[::-1]
    Image.fromarray(np.tile(np.arange(160, 200, dtype=np.uint8), (40, 1))).save(image)  # smaller, and later
    label = label_path(out, item_id)
    with pytest.raises(ValueError, match=(
            rf": 1 label file\(s\) .*: {re.escape(str(label))} was made from {re.escape(image)} \(.*\), the datalist "
            rf"names {re.escape(image)} \(.*\) \(size / modification time differ\); delete those label files")):
        LabelRunner(classifiers, datalist, out, **OPTIONS).run()
    label.unlink()
    assert LabelRunner(classifiers, datalist, out, **OPTIONS).run()["written"] == 1
    for rank in (0, 1):
        assert LabelRunner(classifiers, datalist, out, rank=rank, world_size=2, **OPTIONS).run()["written"] == 0
    LabelRunner(classifiers, datalist, tmp_path / "fresh", **OPTIONS).run()
    assert _label_files(out) == _label_files(tmp_path / "fresh")


def test_a_grown_datalist_labels_only_its_new_images(setup, tmp_path):
    classifiers, datalist, reference, _ = setup
    doc = json.loads(Path(datalist).read_text())
    first = tmp_path / "first.json"
    first.write_text(json.dumps({**doc, "training": doc["training"][:4], "validation": doc["validation"][:1]}))
    assert LabelRunner(classifiers, first, tmp_path / "labels", **OPTIONS).run()["written"] == 4
    summary = LabelRunner(classifiers, datalist, tmp_path / "labels", **OPTIONS).run()
    assert summary["written"] == 4 and summary["finalised"]
    assert _label_files(tmp_path / "labels") == _label_files(reference)
    assert _recorded(tmp_path / "labels") == _good_images(datalist)


def test_a_folder_labelled_before_sources_were_recorded_still_resumes(setup, tmp_path):
    """Its labels have no record and are trusted, as before; the labels a resumed run adds are recorded."""
    classifiers, datalist, reference, _ = setup
    out = tmp_path / "labels"
    shutil.copytree(reference, out)
    for log in (out / ".shards").glob("sources-*.jsonl"):
        log.unlink()
    missing = sorted(_good_images(datalist))[-2:]
    for item_id in missing:
        label_path(out, item_id).unlink()
    assert LabelRunner(classifiers, datalist, out, **OPTIONS).run()["written"] == 2
    assert _label_files(out) == _label_files(reference)
    assert sorted(_recorded(out)) == missing


def test_overlay_and_tensorboard_handlers(setup, tmp_path):
    classifiers, datalist, _, _ = setup
    overlays = OverlayWriter(tmp_path / "overlays", max_images=2)
    board = TensorBoardLabelImages(tmp_path / "tb", max_images=1)
    assert not (tmp_path / "tb").exists()  # made with the first image: a refused run leaves no empty folder
    LabelRunner(classifiers, datalist, tmp_path / "labels", handlers=[overlays, board], **OPTIONS).run()
    pngs = sorted(p.name for p in (tmp_path / "overlays").glob("*.png"))
    assert [n[:-len("_12345678.png")] for n in pngs] == ["tiny_patient00000_study1_view1_frontal",
                                                          "tiny_patient00001_study1_view1_frontal"]
    from PIL import Image

    with Image.open(tmp_path / "overlays" / pngs[0]) as im:
        assert im.mode in ("RGB", "RGBA") and im.width > im.height  # image + two observation panels
    resumed = OverlayWriter(tmp_path / "overlays", max_images=3)  # 2 of its 3 already written: one more at most
    LabelRunner(classifiers, datalist, tmp_path / "labels2", handlers=[resumed], **OPTIONS).run()
    assert sorted(p.name for p in (tmp_path / "overlays").glob("*.png")) == pngs  # (rewrote the first image's)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["images"]) == [f"labels/{OBSERVATIONS[CARDIO]}", f"labels/{OBSERVATIONS[EDEMA]}"]


def test_an_overlay_of_a_long_or_hidden_id_gets_a_name_the_disk_takes(tmp_path):
    """Each part of 'p.../s.../v....jpg' fits a file name, the joined overlay name did not: the
    labeller ended with 'File name too long'. A hidden '.x.abcdefgh.tmp' read as a stale temporary."""
    state = np.zeros(len(OBSERVATIONS), np.int8)
    state[CARDIO] = 1
    writer = OverlayWriter(tmp_path, max_images=4)
    ids = ["/".join(["p" * 100, "s" * 100, "v" * 60 + ".jpg"]), "/".join(["p" * 100, "s" * 100, "w" * 60 + ".jpg"]),
           ".x.abcdefgh.tmp.jpg"]
    for item_id in ids:
        writer(LabelResult(item_id, torch.zeros(1, 8, 8), np.zeros((14, 8, 8), np.float32),
                           np.zeros((14, 8, 8), np.uint8), state))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and all(len(n.encode()) <= 255 and not n.startswith(".") for n in names)


def test_ids_that_flatten_to_one_name_keep_an_overlay_each(tmp_path):
    """'a/b.jpg' and 'a_b.jpg' both flattened to 'a_b.png': the second overlay replaced the first."""
    state = np.zeros(len(OBSERVATIONS), np.int8)
    writer = OverlayWriter(tmp_path, max_images=4)
    for item_id in ["a/b.jpg", "a_b.jpg", "a b.jpg"]:
        writer(LabelResult(item_id, torch.zeros(1, 8, 8), np.zeros((14, 8, 8), np.float32),
                           np.zeros((14, 8, 8), np.uint8), state))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and "a_b.png" in names  # an id that needs no change keeps its plain name


def test_checkpoints_are_checked(setup, tmp_path):
    classifiers, datalist, _, _ = setup
    registry = json.loads(Path(classifiers).read_text())
    registry["classifiers"][0]["checkpoint_sha256"] = "0" * 64
    tampered = tmp_path / "classifiers.json"
    tampered.write_text(json.dumps(registry))
    with pytest.raises(ValueError, match=r"model0.pt: sha256 differs from checkpoint_sha256"):
        LabelRunner(tampered, datalist, tmp_path / "a", **OPTIONS).run()
    registry["classifiers"][0].pop("checkpoint_sha256")
    registry["classifiers"][0]["arch"] = "resnet10"
    tampered.write_text(json.dumps(registry))
    with pytest.raises(ValueError, match=r"model0.pt does not match the model \(resnet10\): "):
        LabelRunner(tampered, datalist, tmp_path / "b", **OPTIONS).run()


def test_batched_images_match_one_at_a_time(setup, tmp_path):
    classifiers, datalist, _, _ = setup
    runner = LabelRunner(classifiers, datalist, tmp_path, batch_size=2, **OPTIONS)
    from cxrdoll.data.transforms import load_image_pipeline

    items = runner.shard_items()[:2]
    images = torch.stack([load_image_pipeline(32)({"image": it["image"]})["image"] for it in items])
    raws = [it["raw_label"] for it in items]
    together = runner.label_batch(images, raws)
    for i in range(2):
        (soft, mask, state), = runner.label_batch(images[i : i + 1], raws[i : i + 1])
        np.testing.assert_allclose(together[i][0], soft, atol=1e-4)
        np.testing.assert_array_equal(together[i][2], state)


def test_ids_naming_the_same_label_file_are_refused(setup, tmp_path):
    """A repeated id, or two that differ only in extension: one label file would overwrite the other."""
    classifiers, datalist, _, _ = setup
    doc = json.loads(Path(datalist).read_text())
    first = doc["training"][0]["id"]
    copy = tmp_path / "dupes.json"
    target = first.replace(".png", ".npz")
    for twin in (first, first.replace(".png", ".jpg")):
        copy.write_text(json.dumps({**doc, "validation": doc["validation"] + [{**doc["training"][0], "id": twin}]}))
        with pytest.raises(ValueError, match=rf"dupes.json: ids '{first}' and '{twin}' name the same label file "
                                             rf"'{target}'"):
            LabelRunner(classifiers, copy, tmp_path / "out", **OPTIONS)


def test_ids_one_label_file_on_a_case_blind_disk_are_refused(setup, tmp_path):
    """On macOS and Windows disks (and SMB shares of them) 'A' and 'a', and 'ü' composed or not, are
    one file: the second image's label replaced the first's, and a resumed run took both as done."""
    classifiers, datalist, _, _ = setup
    doc = json.loads(Path(datalist).read_text())
    item = doc["training"][0]
    copy = tmp_path / "twins.json"
    for first, twin in ((item["id"], item["id"].upper()), ("tiny/M\u00fcller.png", "tiny/Mu\u0308ller.png")):
        copy.write_text(json.dumps({**doc, "training": [{**item, "id": first}, {**item, "id": twin}]}))
        with pytest.raises(ValueError, match=rf"twins.json: ids '{first}' and '{twin}' name the same label file"):
            LabelRunner(classifiers, copy, tmp_path / "out", **OPTIONS)


@pytest.mark.parametrize("bad", ["a\0b.png", "tiny/" + "x" * 300 + ".png", "../up.png"])
def test_an_id_that_can_name_no_label_file_is_refused_before_labelling(setup, tmp_path, bad):
    """A NUL or a 300-byte part passed the datalist check and ended the run at its write, hours in."""
    classifiers, datalist, _, _ = setup
    doc = json.loads(Path(datalist).read_text())
    copy = tmp_path / "bad.json"
    copy.write_text(json.dumps({**doc, "validation": [*doc["validation"], {**doc["training"][0], "id": bad}]}))
    n = len(doc["validation"])
    with pytest.raises(ValueError, match=rf"bad.json: validation\[{n}\]: item id .* (is not a relative path|longer)"):
        LabelRunner(classifiers, copy, tmp_path / "out", **OPTIONS)
    assert not (tmp_path / "out").exists()


def test_max_items_per_section_labels_the_first_items_identically(setup, tmp_path):
    classifiers, datalist, reference, _ = setup
    summary = LabelRunner(classifiers, datalist, tmp_path, max_items_per_section=2, **OPTIONS).run()
    assert summary["images"] == 4  # 2 of training + 2 of validation
    out = json.loads((tmp_path / "datalist.json").read_text())
    full = json.loads((reference / "datalist.json").read_text())
    assert [d["id"] for d in out["training"]] == [d["id"] for d in full["training"][:2]]
    files = _label_files(tmp_path)
    assert files and all(files[name] == _label_files(reference)[name] for name in files)
    with pytest.raises(ValueError, match="differ in \\['max_items_per_section'\\]"):
        LabelRunner(classifiers, datalist, tmp_path, max_items_per_section=3, **OPTIONS).run()


def test_a_classifier_explained_at_another_size_than_it_was_trained_at_is_a_warning(setup, tmp_path, caplog):
    classifiers, datalist, _, _ = setup  # registered at 40 px
    with caplog.at_level("WARNING", logger="cxrdoll.labels"):
        LabelRunner(classifiers, datalist, tmp_path / "at32", **OPTIONS)
    warned = [r.getMessage() for r in caplog.records if "px (image_size)" in r.getMessage()]
    assert warned and all("was trained at 40 px and is explained at 32 px" in w for w in warned)
    caplog.clear()
    with caplog.at_level("WARNING", logger="cxrdoll.labels"):
        LabelRunner(classifiers, datalist, tmp_path / "at40", **{**OPTIONS, "image_size": 40})
    assert not [r for r in caplog.records if "px (image_size)" in r.getMessage()]


def test_a_run_whose_positive_masks_all_come_out_empty_says_so(setup, tmp_path, monkeypatch, caplog):
    """Settings no map reaches (a percent for a fraction, say) left every label empty, silently."""
    import cxrdoll.labels.runner as runner_module

    classifiers, datalist, _, _ = setup
    monkeypatch.setattr(runner_module, "binarise", lambda soft, method, value: torch.zeros(soft.shape, dtype=torch.bool))
    with caplog.at_level(logging.WARNING, logger="cxrdoll.labels.runner"):
        summary = LabelRunner(classifiers, datalist, tmp_path, **OPTIONS).run()
    positives = json.loads((tmp_path / "manifest.json").read_text())["counts"]["positives"]
    assert summary["empty_positive_masks"] == sum(positives.values()) > 0
    warned = [r.getMessage() for r in caplog.records if "every positive mask written for" in r.getMessage()]
    assert len(warned) == 1 and all(f"{name} ({n})" in warned[0] for name, n in positives.items() if n)


def test_a_run_in_which_no_image_has_a_target_says_so(setup, tmp_path, caplog):
    """A datalist without a positive raw label was labelled (every mask empty, exit 0) without a word."""
    classifiers, datalist, _, _ = setup
    doc = json.loads(Path(datalist).read_text())
    for item in doc["training"] + doc["validation"]:
        item["raw_label"] = [0] * len(OBSERVATIONS)
    negatives = tmp_path / "negatives.json"
    negatives.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="cxrdoll.labels.runner"):
        summary = LabelRunner(classifiers, negatives, tmp_path / "out", **OPTIONS).run()
    warned = [r.getMessage() for r in caplog.records if "has a target observation" in r.getMessage()]
    assert summary["written"] == 8 and warned == [
        "none of the 8 images labelled has a target observation under policy 'positives', so every label written "
        "is empty and pre-training on them stops at its first epoch: check the datalist's raw_label (1 = positive), "
        "or --policy positives_uncertain / ensemble_predicted"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cxrdoll.labels.runner"):
        LabelRunner(classifiers, negatives, tmp_path / "out", **OPTIONS).run()  # writes nothing: nothing to warn of
        LabelRunner(classifiers, datalist, tmp_path / "positives", **OPTIONS).run()
    assert not [r for r in caplog.records if "has a target observation" in r.getMessage()]
    # observations no image targets have no positive mask at all, not only empty ones
    assert not [r for r in caplog.records if "every positive mask written for" in r.getMessage()]


def test_constant_images_are_skipped_with_their_reason_not_labelled(setup, tmp_path):
    """An all-white image was explained into positive masks of ~30 % of its pixels (noise, no anatomy); an
    all-black one into empty positive masks."""
    classifiers, _, _, _ = setup
    items = make_images(tmp_path, 1, size=40)
    for name, value in (("white", 255), ("black", 0)):
        path = tmp_path / "images" / f"{name}.png"
        Image.fromarray(np.full((40, 40), value, np.uint8)).save(path)
        items.append({**items[0], "image": str(path), "id": f"blank/{name}.png"})
    out = tmp_path / "out"
    summary = LabelRunner(classifiers, write_datalist(tmp_path, items, n_validation=0), out, **OPTIONS).run()
    assert (summary["written"], summary["skipped"], summary["finalised"]) == (1, 2, True)
    reasons = {row["id"]: row["reason"] for row in read_report(out / "report.csv")}
    assert reasons == {
        "blank/white.png": "ValueError: a constant image (every pixel 1 of 1 at 32 px): nothing in it to localise",
        "blank/black.png": "ValueError: a constant image (every pixel 0 of 1 at 32 px): nothing in it to localise"}
    assert sorted(_label_files(out)) == ["tiny/patient00000/study1/view1_frontal.npz"]


def test_a_run_killed_mid_record_resumes_with_readable_source_logs(setup, tmp_path):
    """A kill while appending leaves a record without its line end; appended to, it became one unreadable
    line, and the run after the resumed one refused the folder ('not a source record')."""
    classifiers, datalist, reference, _ = setup
    out = tmp_path / "labels"
    shutil.copytree(reference, out)
    item_id = sorted(_good_images(datalist))[0]
    label_path(out, item_id).unlink()
    log = out / ".shards" / "sources-rank0000-of-0001.jsonl"
    log.write_bytes(log.read_bytes() + b'{"id": "' + item_id.encode() + b'", "ima')
    assert LabelRunner(classifiers, datalist, out, **OPTIONS).run()["written"] == 1
    assert LabelRunner(classifiers, datalist, out, **OPTIONS).run()["written"] == 0
    assert _recorded(out) == _good_images(datalist)
    assert _label_files(out) == _label_files(reference)


def test_a_run_that_labels_nothing_records_no_settings(setup, tmp_path):
    """Every image skipped (a wrong image root, say): no label holds the settings, so a run with
    corrected settings must not be refused as a mix."""
    classifiers, datalist, _, _ = setup
    doc = json.loads(Path(datalist).read_text())
    for item in doc["training"] + doc["validation"]:
        item["image"] = str(tmp_path / "nowhere" / Path(item["image"]).name)
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(doc))
    out = tmp_path / "labels"
    assert LabelRunner(classifiers, moved, out, **OPTIONS).run()["written"] == 0
    assert not (out / ".shards" / "settings.json").exists()
    LabelRunner(classifiers, moved, out, **{**OPTIONS, "tau": 0.9}).run()


def test_labels_without_soft_maps_keep_the_same_masks(setup, tmp_path):
    classifiers, datalist, reference, _ = setup
    LabelRunner(classifiers, datalist, tmp_path, max_items_per_section=1, save_soft=False, **OPTIONS).run()
    item_id = json.loads(Path(datalist).read_text())["training"][0]["id"]
    label, full = read_label(label_path(tmp_path, item_id)), read_label(label_path(reference, item_id))
    assert set(label) == {"mask", "state"}
    np.testing.assert_array_equal(label["mask"], full["mask"])


def test_labels_of_images_now_missing_are_kept(one_thread, tmp_path):
    """Nothing to compare a missing image with: its label is trusted (docs), not a crash of the resumed run."""
    classifiers, datalist = tiny_setup(tmp_path / "data", n=2)
    out = tmp_path / "labels"
    LabelRunner(classifiers, datalist, out, **OPTIONS).run()
    before = _label_files(out)
    Path(next(iter(_good_images(datalist).values()))).unlink()
    summary = LabelRunner(classifiers, datalist, out, **OPTIONS).run()
    assert (summary["written"], summary["skipped"], summary["finalised"]) == (0, 0, True)
    assert _label_files(out) == before


def test_a_bad_raw_label_is_the_reason_given_whatever_the_image(setup, tmp_path):
    """The datalist's own error, not a missing file's, is what its author has to fix."""
    classifiers, _, _, _ = setup
    items = make_images(tmp_path, 2, size=40)
    items[1]["raw_label"] = items[1]["raw_label"][:13]
    items[1]["image"] = str(tmp_path / "gone.png")
    out = tmp_path / "out"
    LabelRunner(classifiers, write_datalist(tmp_path, items, n_validation=0), out, **OPTIONS).run()
    assert [row["reason"] for row in read_report(out / "report.csv")] == [
        f"datalist item {items[1]['id']!r}: raw_label has 13 values, expected 14"]


def test_the_changed_sources_message_elides_only_what_it_leaves_out(tmp_path):
    record = {"image": "/a.png", "size": 1, "mtime_ns": 0}
    for n, elided in ((6, False), (7, True)):
        changed = [(tmp_path / f"{i}.npz", record, {**record, "size": 2}) for i in range(n)]
        message = _changed_sources_message(tmp_path, changed)
        assert f"{n} label file(s)" in message and "5.npz" in message and "6.npz" not in message
        assert message.endswith(f"{tmp_path / '5.npz'}{', ...' if elided else ''}; delete those label files to "
                                "label their images again, or use a new output_dir")
