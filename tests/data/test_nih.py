"""NIH ChestX-ray14 ingestion (prepare-nih): finding mapping, unknown observations, lists, walk, split, errors."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdoll.cli import main
from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.chexpert import LabelPolicy, split_patients
from cxrdoll.data.datalist import load_classification_datalist
from cxrdoll.data.nih import build_nih_datalist

HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position",
          "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
UNKNOWN = [OBSERVATIONS.index(o) for o in ("Enlarged Cardiomediastinum", "Fracture", "Support Devices")]

# (Image Index, Finding Labels, Patient ID, View Position, list, folder)
IMAGES = [
    ("00000001_000.png", "Effusion|Infiltration", "1", "PA", "train_val", "images_001"),
    ("00000001_001.png", "No Finding", "1", "AP", "train_val", "images_001"),
    ("00000002_000.png", "Mass", "2", "PA", "train_val", "images_001"),
    ("00000003_000.png", "Hernia", "3", "PA", "train_val", "images_002"),
    ("00000004_000.png", "Cardiomegaly|Edema", "4", "PA", "test", "images_002"),
    ("00000005_000.png", "Pneumothorax", "5", "LL", "train_val", "images_002"),  # another view
    ("00000006_000.png", "No Finding", "6", "PA", "neither", "images_002"),
]

# raw_label by hand, in OBSERVATIONS order: No Finding, Enlarged Cardiomediastinum, Cardiomegaly, Lung Opacity,
# Lung Lesion, Edema, Consolidation, Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other,
# Fracture, Support Devices
EXPECTED_RAW = {
    "00000001_000": [0, None, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, None, None],  # Infiltration is Lung Opacity
    "00000001_001": [1, None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, None],
    "00000002_000": [0, None, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, None, None],  # a lesion is an opacity
    "00000003_000": [0, None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, None],  # Hernia: abnormal, nothing mapped
}


def make_nih(root: Path, images=IMAGES, csv_name: str = "Data_Entry_2017_v2020.csv", pngs: bool = True) -> Path:
    """An NIH tree as downloaded: the CSV (the 2017 one with its trailing empty column), the lists, images_00N/images/."""
    root.mkdir(parents=True, exist_ok=True)
    trail = [""] if csv_name == "Data_Entry_2017.csv" else []
    lines = [HEADER + trail] + [[name, findings, "0", patient, "58", "M", view, "2682", "2749", "0.143", "0.143"] + trail
                                for name, findings, patient, view, _, _ in images]
    (root / csv_name).write_text("".join(",".join(line) + "\n" for line in lines))
    for split, list_name in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
        (root / list_name).write_text("".join(f"{name}\n" for name, *_, side, _ in images if side == split))
    for name, *_, folder in images if pngs else []:
        path = root / folder / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(path)
    return root


def by_name(datalist: dict) -> dict[str, dict]:
    return {Path(it["id"]).stem: it for sec in ("training", "validation") for it in datalist[sec]}


def test_findings_map_onto_chexpert_and_unlabelled_observations_are_masked(tmp_path):
    root = make_nih(tmp_path / "nih")
    result = build_nih_datalist(root)
    data = result.to_dict()
    items = by_name(data)
    assert sorted(items) == sorted(EXPECTED_RAW)
    for name, raw in EXPECTED_RAW.items():
        item = items[name]
        assert item["raw_label"] == raw, name
        # default blank policy ignore: unknown observations masked, never negatives; 0 is a counted negative
        assert item["label_mask"] == [0 if r is None else 1 for r in raw], name
        assert item["label"] == [float(r or 0) for r in raw], name
    assert np.isnan(result.raw[:, UNKNOWN]).all() and not np.isnan(np.delete(result.raw, UNKNOWN, axis=1)).any()
    assert data["policy"]["blank"] == dict.fromkeys(OBSERVATIONS, "ignore")
    assert items["00000001_000"]["id"] == "images_001/images/00000001_000.png"
    assert items["00000003_000"]["image"] == f"{root}/images_002/images/00000003_000.png"
    assert items["00000001_001"]["patient"] == "nih00000001" and items["00000003_000"]["patient"] == "nih00000003"
    assert result.skipped == {"test-list images": 1, "images in neither list": 1}
    assert (result.skipped_views, result.missing) == (1, [])  # LL: another view
    assert data["policy"]["labels_csv"] == str(root / "Data_Entry_2017_v2020.csv")
    assert data["policy"]["split"] == {"method": "patient", "val_fraction": 0.1, "seed": 0,
                                       "train_val_list": str(root / "train_val_list.txt"), "test_list": str(root / "test_list.txt")}

    zeros = by_name(build_nih_datalist(root, policy=LabelPolicy.build(blank="zeros")).to_dict())
    assert zeros["00000002_000"]["label_mask"] == [1] * 14 and zeros["00000002_000"]["raw_label"] == EXPECTED_RAW["00000002_000"]


def test_patient_split_keeps_patients_apart_and_leaves_the_test_list_out(tmp_path):
    images = [(f"{p:08d}_{k:03d}.png", "Mass" if k else "No Finding", str(p), "PA", "test" if p < 5 else "train_val", "images")
              for p in range(1, 41) for k in range(3)]
    root = make_nih(tmp_path / "nih", images, pngs=False)
    result = build_nih_datalist(root, val_fraction=0.25, seed=3, check_files=False)
    train, val = set(result.patients[: result.n_training]), set(result.patients[result.n_training :])
    assert not train & val and len(train | val) == 36 and len(val) == 9 and len(result.ids) == 36 * 3
    assert val == split_patients([f"nih{p:08d}" for p in range(5, 41)], 0.25, 3)  # as prepare-chexpert splits
    assert result.skipped == {"test-list images": 12, "images in neither list": 0}
    assert all(i == f"images/{Path(i).name}" and im == f"{root}/{i}" for i, im in zip(result.ids, result.images))  # no walk
    other = build_nih_datalist(root, val_fraction=0.25, seed=4, check_files=False)
    assert set(other.patients[other.n_training :]) != val


def test_test_list_as_validation_keeps_train_val_for_training(tmp_path):
    """NIH's boxed images sit in test_list.txt: --validation test-list makes them the validation list, to be
    labelled, with every train_val_list image training and nothing split by patient."""
    images = [(f"{p:08d}_000.png", "Mass", str(p), "PA", "test" if p < 5 else "train_val", "images") for p in range(1, 21)]
    root = make_nih(tmp_path / "nih", images + [("00000099_000.png", "Mass", "99", "PA", "neither", "images")], pngs=False)
    result = build_nih_datalist(root, check_files=False, validation="test-list")
    assert result.n_training == 16 and result.patients[16:] == [f"nih{p:08d}" for p in range(1, 5)]
    assert set(result.patients[:16]) == {f"nih{p:08d}" for p in range(5, 21)}
    assert result.meta["policy"]["split"] == {"method": "nih_test_list", "train_val_list": str(root / "train_val_list.txt"),
                                             "test_list": str(root / "test_list.txt")}
    assert result.skipped == {"images in neither list": 1}
    with pytest.raises(ValueError, match="validation 'test'; expected one of patient, test-list"):
        build_nih_datalist(root, check_files=False, validation="test")


def test_older_csv_with_its_trailing_empty_column_and_the_newer_preferred(tmp_path):
    reference = build_nih_datalist(make_nih(tmp_path / "nih")).to_dict()
    old = make_nih(tmp_path / "old", csv_name="Data_Entry_2017.csv")
    assert (old / "Data_Entry_2017.csv").read_text().splitlines()[1].endswith("0.143,")
    older = build_nih_datalist(old).to_dict()
    assert older["policy"]["labels_csv"] == str(old / "Data_Entry_2017.csv")
    strip = {k: {**v, "image": v["image"].replace(f"{tmp_path}/nih", f"{tmp_path}/old")} for k, v in by_name(reference).items()}
    assert by_name(older) == strip

    # both there: the v2020 file is read (here it labels 00000003_000 'No Finding')
    make_nih(old, [(*IMAGES[3][:1], "No Finding", *IMAGES[3][2:]), *IMAGES[:3], *IMAGES[4:]])
    both = build_nih_datalist(old).to_dict()
    assert both["policy"]["labels_csv"] == str(old / "Data_Entry_2017_v2020.csv")
    assert by_name(both)["00000003_000"]["raw_label"][0] == 1


def test_images_are_found_by_one_walk_anywhere_under_root(tmp_path, monkeypatch):
    root = make_nih(tmp_path / "nih")
    shutil.move(root / "images_002" / "images", root / "flat")  # any folder under --root will do
    stats = []
    real_isfile = os.path.isfile
    monkeypatch.setattr(os.path, "isfile", lambda p: stats.append(p) or real_isfile(p))
    items = by_name(build_nih_datalist(root).to_dict())
    assert items["00000003_000"]["id"] == "flat/00000003_000.png" and items["00000002_000"]["id"] == "images_001/images/00000002_000.png"
    assert len(stats) == len(EXPECTED_RAW)  # one check per kept image, not one per image per folder

    (root / "images_001" / "images" / "00000002_000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"^1 of 4 images listed in .*Data_Entry_2017_v2020.csv are missing under .* "
                                                r"\(images/00000002_000.png\)\. Skip them with --allow-missing"):
        build_nih_datalist(root)
    result = build_nih_datalist(root, allow_missing=True)
    assert result.missing == ["images/00000002_000.png"] and len(result.ids) == 3
    with pytest.raises(FileNotFoundError, match=r"None was found: --root should be the folder holding Data_Entry_2017_v2020.csv"):
        build_nih_datalist(make_nih(tmp_path / "bare", pngs=False))


def test_a_symlinked_folder_is_walked_once_and_an_image_at_root_is_its_own_id(tmp_path):
    """A link to a folder already walked is not a second copy of its images (it was an error naming both),
    and an image right under --root has its plain name as id, as --no-check-files gives none."""
    root = make_nih(tmp_path / "nih")
    (root / "zz_alias").symlink_to(root / "images_001", target_is_directory=True)  # walked after images_001
    shutil.move(root / "images_002" / "images" / "00000003_000.png", root / "00000003_000.png")
    items = by_name(build_nih_datalist(root).to_dict())
    assert items["00000001_000"]["id"] == "images_001/images/00000001_000.png"
    assert items["00000003_000"]["id"] == "00000003_000.png" and items["00000003_000"]["image"] == f"{root}/00000003_000.png"


def test_an_image_in_two_places_is_refused_naming_both(tmp_path):
    root = make_nih(tmp_path / "nih")
    (root / "images").mkdir()
    shutil.copy(root / "images_002" / "images" / "00000003_000.png", root / "images")
    with pytest.raises(ValueError) as err:
        build_nih_datalist(root)
    assert str(err.value) == (f"{root}: image 00000003_000.png is there twice, images/00000003_000.png and "
                              "images_002/images/00000003_000.png; keep one")
    assert len(build_nih_datalist(root, check_files=False).ids) == 4  # no walk


@pytest.mark.parametrize(
    ("findings", "bad"),
    [("Effusion|Cardiomegally", "Cardiomegally"), ("Mass|", ""), ("No Finding|Mass", "No Finding"), ("", "")],
)
def test_unknown_finding_names_file_row_and_value(tmp_path, findings, bad):
    root = make_nih(tmp_path / "nih", [*IMAGES[:2], (IMAGES[2][0], findings, *IMAGES[2][2:]), *IMAGES[3:]], pngs=False)
    with pytest.raises(ValueError) as err:
        build_nih_datalist(root, check_files=False)
    assert str(err.value) == (
        f"{root}/Data_Entry_2017_v2020.csv row 4, column 'Finding Labels': value {findings!r}: {bad!r} is not an NIH "
        "finding; expected 'No Finding' alone or findings joined by '|' among Atelectasis, Cardiomegaly, Effusion, "
        "Infiltration, Mass, Nodule, Pneumonia, Pneumothorax, Consolidation, Edema, Pleural_Thickening, Emphysema, "
        "Fibrosis, Hernia")


def test_a_bad_finding_is_named_at_its_first_row(tmp_path):
    """Each distinct value is mapped once, but the row named is the value's first in the CSV, whatever
    values repeat before it."""
    images = [IMAGES[1], IMAGES[6], (IMAGES[2][0], "Mass|Cardiomegally", *IMAGES[2][2:]), IMAGES[3],
              (IMAGES[4][0], "Mass|Cardiomegally", *IMAGES[4][2:])]
    root = make_nih(tmp_path / "nih", images, pngs=False)
    with pytest.raises(ValueError, match=r"Data_Entry_2017_v2020.csv row 4, column 'Finding Labels': value 'Mass\|Cardiomegally': "
                                         r"'Cardiomegally' is not an NIH finding"):
        build_nih_datalist(root, check_files=False)


def test_other_views_stay_out_with_views_all_and_list_lines_are_stripped(tmp_path):
    """NIH has no lateral view: any View Position but PA/AP is another view, left out and counted even
    with --views all. A list line with trailing spaces still names its image (it was silently in
    neither list)."""
    root = make_nih(tmp_path / "nih", pngs=False)
    every = build_nih_datalist(root, views="all", check_files=False)
    assert sorted(Path(i).stem for i in every.ids) == sorted(EXPECTED_RAW) and every.skipped_views == 1
    for name in ("train_val_list.txt", "test_list.txt"):
        path = root / name
        path.write_text("".join(f"{line} \t\n" for line in path.read_text().splitlines()))
    spaced = build_nih_datalist(root, check_files=False)
    assert sorted(Path(i).stem for i in spaced.ids) == sorted(EXPECTED_RAW)
    assert spaced.skipped == {"test-list images": 1, "images in neither list": 1}


def test_a_patient_in_both_lists_is_refused(tmp_path):
    root = make_nih(tmp_path / "nih", [*IMAGES[:1], (*IMAGES[1][:4], "test", IMAGES[1][5]), *IMAGES[2:]], pngs=False)
    with pytest.raises(ValueError) as err:
        build_nih_datalist(root, check_files=False)
    assert str(err.value) == (f"1 patient(s) have images in both {root}/train_val_list.txt and {root}/test_list.txt "
                              "(e.g. 'nih00000001': 00000001_000.png and 00000001_001.png); a patient must not be in training and test")
    two = [*IMAGES[:1], (*IMAGES[1][:4], "test", IMAGES[1][5]), *IMAGES[2:], ("00000002_001.png", "Mass", "2", "PA", "test", "images_001")]
    root = make_nih(tmp_path / "two", two, pngs=False)
    with pytest.raises(ValueError, match=r"^2 patient\(s\) have images in both .* \(e.g. 'nih00000001': 00000001_000.png and "):
        build_nih_datalist(root, check_files=False)  # the first patient is the example


def test_missing_files_and_bad_cells_are_named(tmp_path):
    root = make_nih(tmp_path / "nih", pngs=False)
    (root / "Data_Entry_2017_v2020.csv").unlink()
    with pytest.raises(FileNotFoundError) as err:
        build_nih_datalist(root)
    assert str(err.value).startswith(f"{root}/Data_Entry_2017_v2020.csv: NIH ChestX-ray14 CSV not found (nor Data_Entry_2017.csv); "
                                     "--root should be the folder holding")
    root = make_nih(tmp_path / "lists", pngs=False)
    (root / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_list.txt: NIH split list not found"):
        build_nih_datalist(root, check_files=False)
    root = make_nih(tmp_path / "patient", [(*IMAGES[0][:2], "p1", *IMAGES[0][3:]), *IMAGES[1:]], pngs=False)
    with pytest.raises(ValueError, match=r"row 2, column 'Patient ID': value 'p1' is not a number"):
        build_nih_datalist(root, check_files=False)
    for name in ("../x.png", ".."):  # an Image Index goes into a path: a file name only
        root = make_nih(tmp_path / "name", [IMAGES[0], (name, *IMAGES[1][1:]), *IMAGES[2:]], pngs=False)
        with pytest.raises(ValueError, match=rf"row 3, column 'Image Index': value '{re.escape(name)}' is not an image file name"):
            build_nih_datalist(root, check_files=False)
    root = make_nih(tmp_path / "twice", [*IMAGES, IMAGES[0]], pngs=False)
    with pytest.raises(ValueError, match=r"row 9: Image Index '00000001_000.png' duplicates row 2"):
        build_nih_datalist(root, check_files=False)


def test_command_writes_a_loadable_datalist_and_says_which_csv(tmp_path, capsys):
    root = make_nih(tmp_path / "nih", csv_name="Data_Entry_2017.csv")
    out = tmp_path / "out" / "nih.json"
    assert main(["prepare-nih", "--root", str(root), "--out", str(out), "--val-fraction", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert f"labels read from {root}/Data_Entry_2017.csv" in printed
    assert "4 images (frontal) from 3 patients" in printed
    assert "skipped: 1 other views, 0 missing files, 1 test-list images, 1 images in neither list" in printed
    fracture = next(line for line in printed.splitlines() if line.startswith("Fracture"))
    assert fracture.split()[1:] == ["ignore/ignore", "0", "0", "4", "0", "4"]
    loaded = load_classification_datalist(out)
    assert loaded == json.loads(out.read_text()) and len(loaded["training"]) + len(loaded["validation"]) == 4
    assert loaded["validation"] and loaded["policy"]["split"]["val_fraction"] == 0.5

    assert main(["prepare-nih", "--root", str(root), "--out", str(out), "--blank", "zeros", "--no-check-files"]) == 0
    zeros = load_classification_datalist(out)
    assert {it["id"] for it in zeros["training"] + zeros["validation"]} == {f"images/{n}.png" for n in EXPECTED_RAW}
    assert all(it["label_mask"] == [1] * 14 for it in zeros["training"])

    (root / "train_val_list.txt").write_text("00000004_000.png\n")  # patient 4 is on test_list too
    out.unlink()
    assert main(["prepare-nih", "--root", str(root), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: 1 patient(s) have images in both")
    assert not out.exists()
