"""The synthetic dataset writer: layout, CheXpert CSV conventions, label/mask agreement, determinism."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdoll.cli import main
from cxrdoll.constants import CHEXPERT_COLUMNS, OBSERVATIONS
from cxrdoll.data.synth.preview import write_preview
from cxrdoll.data.synth.writer import DATASET, ORGAN_STRUCTURES, Study, SynthConfig, write_synthetic
from cxrdoll.io import read_json

CHEXPERT_VALUES = {"1.0", "0.0", "-1.0", ""}


def _rows(root: Path, split: str) -> list[dict[str, str]]:
    with open(root / DATASET / f"{split}.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "synth.json"}


def test_csv_has_exact_chexpert_columns_and_values(synth_small):
    for split in ("train", "valid"):
        with open(synth_small / DATASET / f"{split}.csv", newline="") as fh:
            assert next(csv.reader(fh)) == list(CHEXPERT_COLUMNS)
    train, valid = _rows(synth_small, "train"), _rows(synth_small, "valid")
    assert len(train) > len(valid) > 0
    cells = [r[o] for r in train for o in OBSERVATIONS]
    assert set(cells) == CHEXPERT_VALUES  # all four conventions occur at the default rates
    assert {r[o] for r in valid for o in OBSERVATIONS} <= {"1.0", "0.0"}  # like CheXpert's validation set
    assert "-1.0" not in {r["No Finding"] for r in train}
    for r in train + valid:
        assert r["Sex"] in {"Male", "Female"} and 18 <= int(r["Age"]) <= 90
        assert (r["Frontal/Lateral"], r["AP/PA"] in {"AP", "PA"}) in {("Frontal", True), ("Lateral", False)}
        assert r["Path"].startswith(f"{DATASET}/{'train' if r in train else 'valid'}/patient")
    assert {r["Sex"] for r in train + valid} == {"Male", "Female"}


def test_studies_with_a_support_device_are_ap_films(synth_small):
    """Lines and tubes mean a bedside (AP) film; other studies are mostly PA."""
    device = OBSERVATIONS.index("Support Devices")
    views = []
    for r in _rows(synth_small, "train") + _rows(synth_small, "valid"):
        if r["Frontal/Lateral"] == "Frontal":
            mask = np.load(synth_small / "truth" / (r["Path"][: -len(".jpg")] + ".npz"))["mask"]
            views.append((bool(mask[device].any()), r["AP/PA"]))
    with_device = [view for has, view in views if has]
    assert len(with_device) >= 3 and set(with_device) == {"AP"}
    assert {view for has, view in views if not has} == {"AP", "PA"}


def test_layout_images_and_truth_exist(synth_small):
    rows = _rows(synth_small, "train") + _rows(synth_small, "valid")
    assert {r["Frontal/Lateral"] for r in rows} == {"Frontal", "Lateral"}
    for r in rows:
        image = Image.open(synth_small / r["Path"])
        assert (image.mode, image.size) == ("L", (64, 64))
        truth = synth_small / "truth" / (r["Path"][: -len(".jpg")] + ".npz")
        assert truth.is_file() == (r["Frontal/Lateral"] == "Frontal")
        view = "view1_frontal.jpg" if r["Frontal/Lateral"] == "Frontal" else "view2_lateral.jpg"
        assert r["Path"].endswith(view)
    train_patients = {r["Path"].split("/")[2] for r in _rows(synth_small, "train")}
    valid_patients = {r["Path"].split("/")[2] for r in _rows(synth_small, "valid")}
    assert train_patients and valid_patients and not train_patients & valid_patients


def test_labels_agree_with_true_masks(synth_small):
    checked = 0
    for split in ("train", "valid"):
        for r in _rows(synth_small, split):
            if r["Frontal/Lateral"] != "Frontal":
                continue
            mask = np.load(synth_small / "truth" / (r["Path"][: -len(".jpg")] + ".npz"))["mask"]
            assert mask.shape == (14, 64, 64) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
            planted = mask.reshape(14, -1).any(axis=1)
            assert not planted[0]  # "No Finding" never has a mask
            for i, obs in enumerate(OBSERVATIONS[1:], start=1):
                if r[obs] == "1.0":
                    assert planted[i], (r["Path"], obs)
                elif r[obs] == "0.0":
                    assert not planted[i], (r["Path"], obs)
            if r["No Finding"] == "1.0":
                assert not planted.any()
            elif r["No Finding"] == "0.0":
                assert planted.any()
            checked += 1
    assert checked == 48


def test_organ_and_lesion_sets(synth_small):
    organs = read_json(synth_small / "organs" / "datalist.json")
    assert organs["classes"] == list(ORGAN_STRUCTURES)
    items = organs["training"] + organs["validation"]
    assert len(items) == 8 and len(organs["validation"]) == 2
    centre_x = {}
    root = synth_small / "organs"
    for item in items:
        assert Image.open(root / item["image"]).size == (64, 64)
        for name, path in zip(ORGAN_STRUCTURES, item["label"]):
            assert Path(path).parent.name == name and not Path(path).is_absolute()
            mask = np.asarray(Image.open(root / path))
            assert set(np.unique(mask)) == {0, 255}
            centre_x.setdefault(name, []).append(np.nonzero(mask)[1].mean() / 64)
    # PA view: the patient's left is on the image's right.
    assert min(centre_x["left lung"]) > 0.5 > max(centre_x["right lung"])
    assert min(centre_x["left clavicle"]) > 0.5 > max(centre_x["right clavicle"])
    assert np.mean(centre_x["heart"]) > 0.5
    lesions = read_json(synth_small / "lesions" / "datalist.json")
    assert lesions["classes"] == ["infection"]
    masks = [np.asarray(Image.open(synth_small / "lesions" / i["label"][0])) for i in lesions["training"] + lesions["validation"]]
    assert all(set(np.unique(m)) <= {0, 255} for m in masks)
    assert sum(m.any() for m in masks) >= 4  # most lesion images carry an infection


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    cfg = SynthConfig(n=6, size=48, seed=3, lateral_frac=0.5, n_organs=2, n_lesions=2)
    write_synthetic(cfg, tmp_path / "a", workers=1)
    write_synthetic(cfg, tmp_path / "b", workers=2)
    a, b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert len(a) > 20 and a == b
    write_synthetic(SynthConfig(n=6, size=48, seed=4, lateral_frac=0.5, n_organs=2, n_lesions=2), tmp_path / "c")
    c = _tree_digest(tmp_path / "c")
    shared = a.keys() & c.keys()
    assert len(shared) > 10 and all(a[k] != c[k] for k in shared if k.endswith((".jpg", ".png", ".npz")))


def test_preview_contact_sheet(synth_small, tmp_path):
    path = write_preview(synth_small, tile=64)
    sheet = Image.open(path)
    assert sheet.mode == "RGB" and sheet.size[0] == 4 * 64
    assert sheet.size[1] == 6 * 64  # 16 frontal tiles + 4 organ + 4 lesion tiles, 4 per row
    assert np.asarray(sheet)[..., 0].std() > 10


def test_cli_help_and_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--out", "--n", "--size", "--seed", "--preview", "--uncertain-frac", "--blank-frac",
                   "--lateral-frac", "--valid-frac", "--n-organs", "--n-lesions", "--workers"):
        assert option in help_text
    assert main(["synth", "--out", str(tmp_path), "--size", "16"]) == 2
    assert capsys.readouterr().err == "error: --size must be 32 to 4096 pixels (got 16)\n"
    for option, value, message in (("--size", "100000", "--size must be 32 to 4096 pixels (got 100000)"),
                                   ("--seed", "-1", "--seed must be >= 0 (got -1)"),
                                   ("--valid-frac", "1", "--valid-frac must be in [0, 1) (got 1.0)")):
        assert main(["synth", "--out", str(tmp_path), option, value]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert main(["synth", "--out", str(tmp_path), "--uncertain-frac", "0.7", "--blank-frac", "0.5"]) == 2
    assert "--uncertain-frac + --blank-frac must be <= 1" in capsys.readouterr().err


def test_the_ends_of_every_allowed_range_are_accepted():
    """What the error messages say is allowed must be: one study, no organ or lesion set, 32 and 4096 px,
    rates of 0 and 1, uncertain + blank cells of exactly 1."""
    SynthConfig(n=1, size=32, seed=0, n_organs=0, n_lesions=0).validate()
    SynthConfig(n=1, size=4096, seed=0, uncertain_frac=0.0, blank_frac=0.0, lateral_frac=0.0, valid_frac=0.0,
                normal_frac=0.0, prevalence=0.0).validate()
    SynthConfig(n=1, size=32, seed=0, uncertain_frac=0.4, blank_frac=0.6, lateral_frac=1.0, normal_frac=1.0,
                prevalence=1.0).validate()
    SynthConfig(n=1, size=32, seed=0, uncertain_frac=1.0, blank_frac=0.0).validate()
    with pytest.raises(ValueError, match=r"--n-organs/--n-lesions >= 0 \(got 1, 0, -1\)"):
        SynthConfig(n=1, size=32, seed=0, n_organs=0, n_lesions=-1).validate()


def test_cli_writes_and_refuses_to_overwrite(capsys, tmp_path):
    args = ["synth", "--out", str(tmp_path), "--n", "4", "--size", "32", "--n-organs", "1", "--n-lesions", "0", "--preview"]
    assert main(args) == 0
    assert (tmp_path / "preview.png").is_file() and (tmp_path / "synth.json").is_file()
    assert not (tmp_path / "lesions").exists()
    capsys.readouterr()
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: already holds {DATASET}, truth, organs;")
    assert main(args + ["--overwrite"]) == 0
    (tmp_path / "organs" / "stray.txt").write_text("from an earlier run")
    assert main(args[:-5] + ["--n-organs", "0", "--n-lesions", "0", "--overwrite"]) == 0
    assert not (tmp_path / "organs").exists()  # replaced, not merged: no earlier output survives
    assert main(["synth", "--out", str(tmp_path / "none"), "--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err


def test_lateral_rows_repeat_their_frontal_labels_and_synth_json_counts_what_was_written(synth_small):
    summary = read_json(synth_small / "synth.json")
    positives = dict.fromkeys(OBSERVATIONS, 0)
    for split in ("train", "valid"):
        rows = _rows(synth_small, split)
        assert summary["rows"][split] == len(rows)
        frontal = {r["Path"].rsplit("/", 1)[0]: r for r in rows if r["Frontal/Lateral"] == "Frontal"}
        laterals = [r for r in rows if r["Frontal/Lateral"] == "Lateral"]
        for r in laterals:
            twin = frontal[r["Path"].rsplit("/", 1)[0]]
            assert [r[o] for o in OBSERVATIONS] == [twin[o] for o in OBSERVATIONS], r["Path"]
        for r in frontal.values():  # the true labels, from the masks as docs/FORMATS.md defines them
            found = np.load(synth_small / "truth" / (r["Path"][: -len(".jpg")] + ".npz"))["mask"].reshape(14, -1).any(axis=1)
            found[0] = not np.delete(found, [0, OBSERVATIONS.index("Support Devices")]).any()
            for obs, value in zip(OBSERVATIONS, found):
                positives[obs] += int(value)
    assert summary["studies"] == 48 and summary["true_positives"] == positives
    assert sum(1 for split in ("train", "valid") for r in _rows(synth_small, split) if r["Frontal/Lateral"] == "Lateral") > 0


def test_uncertain_and_blank_cells_come_at_their_rates_and_never_in_validation():
    from cxrdoll.data.synth.writer import reported_labels

    cfg = SynthConfig(n=1, size=32, seed=0, uncertain_frac=0.3, blank_frac=0.2)
    positive = np.ones(len(OBSERVATIONS), int)
    cells = np.array([reported_labels(cfg, positive, Study(i, 1, 1, "train", False)) for i in range(2000)])
    assert "-1.0" not in cells[:, 0] and abs(np.mean(cells[:, 0] == "") - 0.2) < 0.03
    assert abs(np.mean(cells[:, 1:] == "-1.0") - 0.3) < 0.01 and abs(np.mean(cells[:, 1:] == "") - 0.2) < 0.01
    valid = np.array([reported_labels(cfg, positive, Study(i, 1, 1, "valid", False)) for i in range(200)])
    assert (valid == "1.0").all()


def test_patient_split_and_ages():
    from cxrdoll.data.synth.writer import patient_meta, plan_studies

    cfg = SynthConfig(n=300, size=32, seed=1, valid_frac=0.23)
    studies = plan_studies(cfg)
    patients = {s.patient for s in studies}
    valid = {s.patient for s in studies if s.split == "valid"}
    assert len(valid) == round(0.23 * len(patients))  # a --valid-frac of patients
    for seed in range(6):  # whichever patients are drawn, the first one included
        studies = plan_studies(SynthConfig(n=12, size=32, seed=seed, valid_frac=0.5))
        n_patients = len({s.patient for s in studies})
        assert len({s.patient for s in studies if s.split == "valid"}) == round(0.5 * n_patients)
    laterals = plan_studies(SynthConfig(n=2000, size=32, seed=2, lateral_frac=0.3))
    assert abs(np.mean([s.lateral for s in laterals]) - 0.3) < 0.03  # a --lateral-frac of studies
    ages = {patient_meta(cfg, p)[1] for p in range(1, 3000)}
    assert ages == set(range(18, 91))


def test_studies_of_one_patient_share_one_anatomy(tmp_path, monkeypatch):
    import cxrdoll.data.synth.writer as writer

    shared: list = []
    real = writer.make_phantom
    monkeypatch.setattr(writer, "make_phantom", lambda rng, size, findings, params=None: shared.append(
        (params.lung_w, params.heart_top)) or real(rng, size, findings, params=params))
    cfg = SynthConfig(n=20, size=32, seed=0, n_organs=0, n_lesions=0)
    write_synthetic(cfg, tmp_path)
    by_patient: dict[int, set] = {}
    for study, anatomy in zip(writer.plan_studies(cfg), shared):
        by_patient.setdefault(study.patient, set()).add(anatomy)
    assert max(len(s) for s in by_patient.values()) == 1 and len(set.union(*by_patient.values())) == len(by_patient)
    assert len(shared) == 20 > len(by_patient)  # some patients hold several studies


@pytest.mark.parametrize("finding, infected", [("Pneumonia", True), ("Consolidation", True), ("Pleural Effusion", False)])
def test_lesion_masks_are_the_infection_findings(tmp_path, monkeypatch, finding, infected):
    import cxrdoll.data.synth.writer as writer

    made = []
    real = writer.make_phantom
    monkeypatch.setattr(writer, "make_phantom", lambda rng, size, findings, params=None: made.append(
        real(rng, size, [finding])) or made[-1])
    item = writer._write_lesion((SynthConfig(n=1, size=64, seed=0), tmp_path, 0))
    mask = np.asarray(Image.open(tmp_path / item["label"][0]))
    expected = made[0].truth[OBSERVATIONS.index(finding)].astype(bool) if infected else np.zeros((64, 64), bool)
    assert np.array_equal(mask == 255, expected) and expected.any() == infected


def test_negative_workers_is_a_usage_error(tmp_path, capsys):
    """--workers -2 was accepted and quietly ran in one process; ingest-dicom refuses it too."""
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "s"), "--workers", "-2"])
    assert exit_info.value.code == 2
    assert "argument --workers: '-2' is not a whole number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
