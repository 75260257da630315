"""MIMIC-CXR-JPG ingestion (prepare-mimic): per-study labels, views, splits, left-out images, errors."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdoll.cli import main
from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.chexpert import LabelPolicy, split_patients
from cxrdoll.data.datalist import load_classification_datalist
from cxrdoll.data.mimic import build_mimic_datalist

NF, CARDIO, EDEMA, ATEL, EFFUSION, SUPPORT = (OBSERVATIONS.index(o) for o in (
    "No Finding", "Cardiomegaly", "Edema", "Atelectasis", "Pleural Effusion", "Support Devices"))
META_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
                "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
                "PatientOrientationCodeSequence_CodeMeaning"]
LABEL_COLUMNS = ["subject_id", "study_id"] + sorted(OBSERVATIONS)  # MIMIC's order: alphabetical, unlike CheXpert's

# (dicom_id, subject_id, study_id, ViewPosition, split)
IMAGES = [
    ("a1", "10000001", "50000001", "PA", "train"),
    ("a2", "10000001", "50000001", "LATERAL", "train"),
    ("a3", "10000001", "50000002", "AP", "train"),
    ("b1", "10000002", "50000003", "PA", "validate"),
    ("b2", "10000002", "50000003", "LL", "validate"),
    ("c1", "10000003", "50000004", "AP AXIAL", "train"),  # another view
    ("c2", "10000003", "50000004", "", "train"),  # blank view: another view
    ("d1", "10000004", "50000005", "PA", "test"),
    ("e1", "10000005", "50000006", "PA", "train"),  # its study has no label row
    ("f1", "11000006", "50000007", "AP", "validate"),
]
# (subject_id, study_id) -> observation values; study 50000099 has no image (ignored)
LABELS = {
    ("10000001", "50000001"): {"Atelectasis": "-1.0", "Cardiomegaly": "1.0"},
    ("10000001", "50000002"): {"Support Devices": "1.0"},
    ("10000002", "50000003"): {"Edema": "-1.0"},
    ("10000003", "50000004"): {"No Finding": "1.0"},
    ("10000004", "50000005"): {"Pneumonia": "1.0"},
    ("11000006", "50000007"): {"Pleural Effusion": "0.0"},
    ("10000009", "50000099"): {"Edema": "1.0"},
}


def csv_text(columns: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    text = csv_text(columns, rows)
    path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


def label_rows(labels: dict) -> list[dict]:
    return [{"subject_id": s, "study_id": t, **{o: values.get(o, "") for o in OBSERVATIONS}} for (s, t), values in labels.items()]


def image_id(dicom: str, subject: str, study: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def make_mimic(root: Path, images=IMAGES, labels=LABELS, label_columns=LABEL_COLUMNS, jpgs: bool = True) -> Path:
    """A MIMIC-CXR-JPG tree: metadata gzipped (as PhysioNet ships it), split and labels plain."""
    root.mkdir(parents=True, exist_ok=True)
    meta = [{**dict.fromkeys(META_COLUMNS, ""), "dicom_id": d, "subject_id": s, "study_id": t, "ViewPosition": v,
             "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "Rows": "64", "Columns": "48"} for d, s, t, v, _ in images]
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", META_COLUMNS, meta)
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"],
              [{"dicom_id": d, "study_id": t, "subject_id": s, "split": sp} for d, s, t, _, sp in images])
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", label_columns, label_rows(labels))
    for d, s, t, _, _ in images if jpgs else []:
        path = root / image_id(d, s, t)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 6), 128, np.uint8)).save(path)
    return root


def by_id(datalist: dict) -> dict[str, dict]:
    return {Path(it["id"]).stem: it for sec in ("training", "validation") for it in datalist[sec]}


def test_official_split_ids_paths_labels_and_what_is_left_out(tmp_path):
    root = make_mimic(tmp_path / "mimic")
    result = build_mimic_datalist(root, policy=LabelPolicy.build(uncertain_per="Atelectasis=ones"))
    data = result.to_dict()
    assert [Path(it["id"]).stem for it in data["training"]] == ["a1", "a3"]
    assert [Path(it["id"]).stem for it in data["validation"]] == ["b1", "f1"]
    items = by_id(data)
    assert items["a1"]["id"] == "files/p10/p10000001/s50000001/a1.jpg" and items["a1"]["image"] == f"{root}/files/p10/p10000001/s50000001/a1.jpg"
    assert items["f1"]["id"] == "files/p11/p11000006/s50000007/f1.jpg" and items["f1"]["patient"] == "p11000006"
    # study 50000001: U-Ones on Atelectasis, positive Cardiomegaly, so No Finding derived 0
    a1 = items["a1"]
    assert a1["raw_label"][ATEL] == -1 and (a1["label"][ATEL], a1["label_mask"][ATEL]) == (1.0, 1)
    assert (a1["label"][CARDIO], a1["label"][NF], a1["label_mask"][NF], a1["raw_label"][NF]) == (1.0, 0.0, 1, None)
    # a device is no finding: No Finding stays blank, blank policy zeros
    assert (items["a3"]["label"][SUPPORT], items["a3"]["label"][NF], items["a3"]["label_mask"][NF]) == (1.0, 0.0, 1)
    # only an uncertain Edema (U-Ignore by default): Edema and the derived No Finding are masked
    assert items["b1"]["raw_label"][EDEMA] == -1 and items["b1"]["label_mask"][EDEMA] == 0 and items["b1"]["label_mask"][NF] == 0
    assert items["f1"]["raw_label"][EFFUSION] == 0 and items["f1"]["raw_label"][EDEMA] is None
    assert (result.skipped_views, result.missing) == (4, [])  # a2, b2 lateral; c1, c2 other views
    assert result.skipped == {"test-split images": 1, "images of studies without labels": 1}
    assert data["policy"]["split"] == {"method": "mimic_official", "split_csv": str(root / "mimic-cxr-2.0.0-split.csv")}
    assert data["policy"]["labels_csv"] == str(root / "mimic-cxr-2.0.0-chexpert.csv")
    assert data["policy"]["uncertain"]["Atelectasis"] == "ones" and data["root"] == str(root)


def test_a_blank_view_position_falls_back_to_the_view_code_meaning(tmp_path):
    """Images whose ViewPosition is blank were all dropped as another view, though the metadata's
    ViewCodeSequence_CodeMeaning names the view of many of them."""
    images = [("g1", "10000007", "50000008", "", "train"), ("g2", "10000007", "50000008", "", "train"),
              ("g3", "10000007", "50000008", "", "train"), ("g4", "10000007", "50000008", "", "train"),
              ("g5", "10000007", "50000008", "", "train"), ("g6", "10000007", "50000008", "XTABLE LATERAL", "train")]
    meanings = ["postero-anterior", "antero-posterior", "lateral", "left lateral decubitus", "", ""]
    root = make_mimic(tmp_path / "mimic", images, {("10000007", "50000008"): {"Edema": "1.0"}})
    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(meta.read_bytes()).decode())))
    for row, meaning in zip(rows, meanings):
        row["ViewCodeSequence_CodeMeaning"] = meaning
    write_csv(meta, META_COLUMNS, rows)
    frontal = build_mimic_datalist(root, split="patient", val_fraction=0.0)
    assert [Path(it["id"]).stem for it in frontal.to_dict()["training"]] == ["g1", "g2"]
    lateral = build_mimic_datalist(root, split="patient", val_fraction=0.0, views="lateral")
    assert [Path(it["id"]).stem for it in lateral.to_dict()["training"]] == ["g3", "g6"]
    for row in rows:  # a copy without the column
        del row["ViewCodeSequence_CodeMeaning"]
    write_csv(meta, [c for c in META_COLUMNS if c != "ViewCodeSequence_CodeMeaning"], rows)
    assert [Path(it["id"]).stem for it in build_mimic_datalist(root, split="patient", val_fraction=0.0, views="all")
            .to_dict()["training"]] == ["g6"]


def write_view_meanings(root: Path, meanings: list[str]) -> None:
    """Fill the metadata's ViewCodeSequence_CodeMeaning, row by row."""
    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(meta.read_bytes()).decode())))
    for row, meaning in zip(rows, meanings):
        row["ViewCodeSequence_CodeMeaning"] = meaning
    write_csv(meta, META_COLUMNS, rows)


def test_view_position_wins_over_a_disagreeing_view_code_meaning(tmp_path):
    """The code meaning only stands in for a blank ViewPosition, as for DICOM files: where both are
    given, ViewPosition decides (another view included), whatever the meaning says."""
    images = [("g1", "10000007", "50000008", "PA", "train"), ("g2", "10000007", "50000008", "LL", "train"),
              ("g3", "10000007", "50000008", "AP AXIAL", "train")]
    root = make_mimic(tmp_path / "mimic", images, {("10000007", "50000008"): {"Edema": "1.0"}})
    write_view_meanings(root, ["lateral", "postero-anterior", "antero-posterior"])
    frontal = build_mimic_datalist(root, split="patient", val_fraction=0.0)
    assert [Path(i).stem for i in frontal.ids] == ["g1"] and frontal.skipped_views == 2
    lateral = build_mimic_datalist(root, split="patient", val_fraction=0.0, views="lateral")
    assert [Path(i).stem for i in lateral.ids] == ["g2"] and lateral.skipped_views == 2


def test_each_left_out_image_is_counted_once_under_its_first_reason(tmp_path):
    """A test-split image of a study without a label row is a test-split image, not also an unlabelled
    one: the summary's counts add up to the images left out."""
    images = [*IMAGES, ("h1", "10000008", "50000009", "PA", "test"), ("h2", "10000008", "50000009", "LATERAL", "test")]
    result = build_mimic_datalist(make_mimic(tmp_path / "mimic", images))
    assert result.skipped == {"test-split images": 3, "images of studies without labels": 1}
    assert (len(result.ids), result.skipped_views) == (4, 4)  # h2, a lateral, is counted as test-split only
    assert len(result.ids) + result.skipped_views + sum(result.skipped.values()) == len(images)


def test_labels_are_per_study_and_reach_every_image_of_it(tmp_path):
    root = make_mimic(tmp_path / "mimic")
    items = by_id(build_mimic_datalist(root, views="all").to_dict())
    assert sorted(items) == ["a1", "a2", "a3", "b1", "b2", "f1"]  # other views never, whatever --views
    assert items["a2"]["raw_label"] == items["a1"]["raw_label"] and items["a2"]["raw_label"][CARDIO] == 1
    assert items["b2"]["raw_label"] == items["b1"]["raw_label"] and items["a3"]["raw_label"][CARDIO] is None
    lateral = build_mimic_datalist(root, views="lateral")
    assert [Path(i).stem for i in lateral.ids] == ["a2", "b2"] and lateral.n_training == 1 and lateral.skipped_views == 6


def test_label_columns_map_by_name_in_any_order_and_negbio_is_read(tmp_path):
    reference = build_mimic_datalist(make_mimic(tmp_path / "a"), views="all").to_dict()
    shuffled = ["study_id"] + [LABEL_COLUMNS[i + 2] for i in np.random.default_rng(1).permutation(14)] + ["subject_id"]
    again = build_mimic_datalist(make_mimic(tmp_path / "b", label_columns=shuffled), views="all").to_dict()
    assert by_id(again) == {k: {**v, "image": v["image"].replace(f"{tmp_path}/a", f"{tmp_path}/b")} for k, v in by_id(reference).items()}

    root = tmp_path / "a"
    write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", LABEL_COLUMNS, label_rows({**LABELS, ("10000001", "50000001"): {"Cardiomegaly": "0.0"}}))
    negbio_list = build_mimic_datalist(root, labeler="negbio").to_dict()
    assert negbio_list["policy"]["labels_csv"] == str(root / "mimic-cxr-2.0.0-negbio.csv.gz")
    negbio = by_id(negbio_list)
    assert negbio["a1"]["raw_label"][CARDIO] == 0 and negbio["a1"]["raw_label"][ATEL] is None
    assert by_id(reference)["a1"]["raw_label"][CARDIO] == 1  # the chexpert labeller's file is the default


def test_patient_split_keeps_patients_on_one_side_and_leaves_test_out(tmp_path):
    images, labels = [], {}
    for p in range(40):
        subject = f"1{p:07d}"
        for s in range(2):
            study = f"5{p:05d}{s:02d}"
            labels[(subject, study)] = {"Edema": "1.0"}
            images += [(f"i{p}_{s}_{v}", subject, study, v, "test" if p < 4 else ("validate" if p % 5 == 0 else "train"))
                       for v in ("PA", "LATERAL")]
    root = make_mimic(tmp_path / "mimic", images, labels, jpgs=False)
    result = build_mimic_datalist(root, split="patient", val_fraction=0.25, seed=3, views="all", check_files=False)
    train = set(result.patients[: result.n_training])
    val = set(result.patients[result.n_training :])
    assert not train & val and len(train | val) == 36 and len(val) == 9 and len(result.ids) == 36 * 4
    assert val == split_patients([f"p1{p:07d}" for p in range(4, 40)], 0.25, 3)  # as prepare-chexpert splits
    assert result.skipped == {"test-split images": 16, "images of studies without labels": 0}
    assert result.meta["policy"]["split"] == {"method": "patient", "val_fraction": 0.25, "seed": 3}
    official = build_mimic_datalist(root, views="all", check_files=False)
    assert set(official.patients[official.n_training :]) == {f"p1{p:07d}" for p in range(5, 40, 5)}


def test_nothing_left_is_an_error_that_counts_each_reason(tmp_path):
    root = make_mimic(tmp_path / "mimic", [IMAGES[1], IMAGES[7], IMAGES[8]], jpgs=False)  # lateral, test, unlabelled
    with pytest.raises(ValueError) as err:
        build_mimic_datalist(root, check_files=False)
    assert str(err.value) == (f"{root}/mimic-cxr-2.0.0-metadata.csv.gz: no image left of 3 rows (1 not of the views ['frontal'], "
                              "0 missing files, 1 test-split images, 1 images of studies without labels)")


def test_missing_images_fail_or_are_skipped(tmp_path):
    root = make_mimic(tmp_path / "mimic")
    (root / image_id("a3", "10000001", "50000002")).unlink()
    with pytest.raises(FileNotFoundError, match=r"^1 of 4 images listed in .*metadata.csv.gz are missing under .* "
                                                r"\(files/p10/p10000001/s50000002/a3.jpg\)\. Skip them with --allow-missing"):
        build_mimic_datalist(root)
    result = build_mimic_datalist(root, allow_missing=True)
    assert result.missing == ["files/p10/p10000001/s50000002/a3.jpg"] and len(result.ids) == 3
    assert len(build_mimic_datalist(root, check_files=False).ids) == 4
    with pytest.raises(FileNotFoundError, match="None was found: --root should be the folder holding files/ and the MIMIC-CXR-JPG CSVs"):
        build_mimic_datalist(make_mimic(tmp_path / "bare", jpgs=False))


def test_missing_csv_is_named(tmp_path):
    root = make_mimic(tmp_path / "mimic")
    (root / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(FileNotFoundError) as err:
        build_mimic_datalist(root)
    assert str(err.value) == (f"{root}/mimic-cxr-2.0.0-split.csv: MIMIC-CXR-JPG CSV not found (nor mimic-cxr-2.0.0-split.csv.gz); "
                              "--root should be the folder holding files/ and the MIMIC-CXR-JPG CSVs")
    with pytest.raises(FileNotFoundError, match=r"mimic-cxr-2.0.0-negbio.csv: MIMIC-CXR-JPG CSV not found \(nor mimic-cxr-2.0.0-negbio.csv.gz\)"):
        build_mimic_datalist(make_mimic(tmp_path / "other"), labeler="negbio")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[1].update(Edema="2"), "{labels} row 3, column 'Edema': value '2' is not 1, 0, -1 or blank"),
        (lambda rows: rows[2].update(study_id="5000000x"), "{labels} row 4, column 'study_id': value '5000000x' is not a number"),
        (lambda rows: rows.append(dict(rows[0])), "{labels} row 9: subject_id/study_id '10000001/50000001' duplicates row 2"),
    ],
)
def test_bad_label_rows_name_file_row_and_column(tmp_path, edit, message):
    root = make_mimic(tmp_path / "mimic")
    rows = label_rows(LABELS)
    edit(rows)
    labels = write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", LABEL_COLUMNS, rows)
    with pytest.raises(ValueError) as err:
        build_mimic_datalist(root)
    assert str(err.value) == message.format(labels=labels)


def test_bad_split_and_metadata_rows_are_named(tmp_path):
    root = make_mimic(tmp_path / "mimic", [*IMAGES[:3], (*IMAGES[3][:4], "valid"), *IMAGES[4:]])
    with pytest.raises(ValueError) as err:
        build_mimic_datalist(root)
    assert str(err.value) == f"{root}/mimic-cxr-2.0.0-split.csv row 5, column 'split': value 'valid' is not train, validate or test"
    root = make_mimic(tmp_path / "dots", [("../a1", *IMAGES[0][1:]), *IMAGES[1:]], jpgs=False)
    with pytest.raises(ValueError, match=r"metadata.csv.gz row 2, column 'dicom_id': value '../a1' is not a DICOM id"):
        build_mimic_datalist(root, check_files=False)


def test_an_image_without_a_split_row_or_listed_twice_in_the_metadata_is_refused(tmp_path):
    """An image the split CSV lacks would otherwise take another row's side; one listed twice would be
    two items. Both are refused naming the metadata row."""
    root = make_mimic(tmp_path / "mimic", jpgs=False)
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"],
              [{"dicom_id": d, "study_id": t, "subject_id": s, "split": sp} for d, s, t, _, sp in IMAGES if d != "b1"])
    with pytest.raises(ValueError) as err:
        build_mimic_datalist(root, check_files=False)
    assert str(err.value) == (f"{root}/mimic-cxr-2.0.0-metadata.csv.gz row 5: dicom_id 'b1' has no row in "
                              f"{root}/mimic-cxr-2.0.0-split.csv")
    root = make_mimic(tmp_path / "twice", jpgs=False)
    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(meta.read_bytes()).decode())))
    write_csv(meta, META_COLUMNS, [*rows, rows[0]])  # the split CSV lists a1 once
    with pytest.raises(ValueError) as err:
        build_mimic_datalist(root, check_files=False)
    assert str(err.value) == f"{meta} row 12: dicom_id 'a1' duplicates row 2"


def test_command_writes_a_loadable_datalist_and_prints_the_summary(tmp_path, capsys):
    root = make_mimic(tmp_path / "mimic")
    out = tmp_path / "out" / "mimic.json"
    argv = ["prepare-mimic", "--root", str(root), "--out", str(out), "--uncertain", "ones", "--views", "all"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "6 images (frontal/lateral) from 3 patients: 3 training, 3 validation" in printed
    assert "skipped: 2 other views, 0 missing files, 1 test-split images, 1 images of studies without labels" in printed
    atel = next(line for line in printed.splitlines() if line.startswith("Atelectasis"))
    assert atel.split()[1:] == ["ones/zeros", "2", "4", "0", "2", "4"]
    loaded = load_classification_datalist(out)
    assert loaded == json.loads(out.read_text()) and len(loaded["training"]) == 3
    assert loaded["policy"]["uncertain"]["Atelectasis"] == "ones" and loaded["policy"]["split"]["method"] == "mimic_official"

    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"],
              [{"dicom_id": "a1", "study_id": "50000001", "subject_id": "10000001", "split": "TRAIN"}])
    out.unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {root}/mimic-cxr-2.0.0-split.csv row 2, column 'split': value 'TRAIN' is not train, validate or test\n"
    assert not out.exists()
