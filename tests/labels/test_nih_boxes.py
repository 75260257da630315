"""prepare-nih-boxes: NIH ChestX-ray14's bounding boxes -> truth files at prepare-nih's ids, scored by label-quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdoll.cli import main
from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.nih import build_nih_datalist
from cxrdoll.labels.nih_boxes import convert
from cxrdoll.labels.quality import read_truth
from cxrdoll.labels.writer import label_path, write_label
from tests.data.test_nih import make_nih

HEIGHT, WIDTH = 48, 64  # the images' size: not square, so swapped axes fail
A, B = "00000001_000.png", "00000002_000.png"
IMAGES = [
    (A, "Atelectasis|Mass|Nodule", "1", "PA", "test", "images_001"),  # boxed images: NIH's test set
    (B, "Infiltration|Effusion", "2", "PA", "test", "images_002"),
    ("00000003_000.png", "No Finding", "3", "PA", "train_val", "images_002"),  # no box
]
HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
ROWS = [  # rows 2-5 of the CSV
    f"{A},Atelectasis,7.6,5.9,8.0,6.0,,,",  # pixel centres 8.5..15.5 x 6.5..11.5: columns 8-15, rows 6-11
    f"{A},Mass,0,0,4,4,,,",
    f"{A},Nodule,60,40,4,8,,,",  # reaches the right and bottom edges exactly
    f"{B},Infiltrate,20.5,30.5,10,5,,,",  # a centre on the box's left or top edge is inside, on its right not
]
ATELECTASIS, LESION, OPACITY, PNEUMOTHORAX = (OBSERVATIONS.index(o) for o in
                                             ("Atelectasis", "Lung Lesion", "Lung Opacity", "Pneumothorax"))


def write_boxes(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(f"{row}\n" for row in rows))
    return path


@pytest.fixture
def nih(tmp_path) -> Path:
    """An NIH tree (prepare-nih's fake) with 64 x 48 PNGs and the box CSV."""
    root = make_nih(tmp_path / "nih", IMAGES)
    for name, *_, folder in IMAGES:
        Image.fromarray(np.full((HEIGHT, WIDTH), 100, np.uint8)).save(root / folder / "images" / name)
    write_boxes(root / "BBox_List_2017.csv", ROWS)
    return root


def expected_masks() -> dict[str, np.ndarray]:
    """By hand, from the pixel-centre rule."""
    a, b = (np.zeros((14, HEIGHT, WIDTH), np.uint8) for _ in range(2))
    a[ATELECTASIS, 6:12, 8:16] = 1
    a[LESION, 0:4, 0:4] = a[LESION, 40:48, 60:64] = 1  # Mass and Nodule: one observation, the union
    b[OPACITY, 30:35, 20:30] = 1
    return {A: a, B: b}


def test_truth_files_hold_the_boxes_at_the_labels_paths_of_prepare_nih_ids(nih, tmp_path):
    out = tmp_path / "truth"
    done = convert(nih, out)
    assert (done.folder, done.written, done.boxes) == (out, 2, 4)
    assert done.boxed == {"Cardiomegaly": 0, "Lung Opacity": 1, "Lung Lesion": 1, "Pneumonia": 0, "Atelectasis": 1,
                          "Pneumothorax": 0, "Pleural Effusion": 0}
    ids = {Path(item["id"]).name: item["id"]
           for section in ("training", "validation") for item in build_nih_datalist(nih, validation="test-list").to_dict()[section]}
    assert ids[A] == "images_001/images/00000001_000.png" and ids[B] == "images_002/images/00000002_000.png"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert files == ["images_001/images/00000001_000.npz", "images_002/images/00000002_000.npz"]
    annotated = {A: [LESION, ATELECTASIS], B: [OPACITY]}  # the boxed observations only (not B's Pleural Effusion)
    for name, expected in expected_masks().items():
        path = label_path(out, ids[name])
        with np.load(path) as data:
            assert sorted(data.files) == ["annotated", "mask"] and data["mask"].dtype == np.uint8
            assert data["annotated"].dtype == bool
        mask, known = read_truth(path)
        np.testing.assert_array_equal(mask, expected)
        assert np.flatnonzero(known).tolist() == annotated[name]


def test_box_rows_as_nih_ships_them_six_fields_under_the_nine_field_header_are_read(nih, tmp_path):
    """The real file's rows end at h (``00013118_008.png,Atelectasis,225.08,547.02,86.78,79.19``): only its header
    has the trailing ',,,'; a row missing a named column is still refused."""
    shipped = write_boxes(tmp_path / "shipped.csv", [row.removesuffix(",,,") for row in ROWS])
    convert(nih, tmp_path / "shipped", boxes_csv=shipped)
    convert(nih, tmp_path / "padded")
    for name in (A, B):
        path = f"{'images_001' if name == A else 'images_002'}/images/{Path(name).stem}.npz"
        for a, b in zip(read_truth(tmp_path / "shipped" / path), read_truth(tmp_path / "padded" / path)):
            np.testing.assert_array_equal(a, b)
    short = write_boxes(tmp_path / "short.csv", [*ROWS[:1], f"{B},Infiltrate,1,1,2"])
    with pytest.raises(ValueError, match=r"short.csv row 3: 5 fields, but the header has 9 \(6 named\)$"):
        convert(nih, tmp_path / "short", boxes_csv=short)


@pytest.mark.parametrize("rows, message", [
    ([*ROWS[:2], f"{A},Emphysema,1,1,2,2,,,"],
     "row 4, column 'Finding Label': value 'Emphysema' is not one of NIH's boxed findings (Atelectasis, Cardiomegaly, "
     "Effusion, Mass, Nodule, Pneumonia, Pneumothorax, Infiltrate)"),
    ([*ROWS[:1], f"{B},Infiltrate,1,1x,2,2,,,"], "row 3, column 'y': value '1x' is not a finite number >= 0"),
    ([f"{B},Infiltrate,-0.5,1,2,2,,,"], "row 2, column 'Bbox [x': value '-0.5' is not a finite number >= 0"),
    ([f"{B},Infiltrate,1,1,2,nan,,,"], "row 2, column 'h]': value 'nan' is not a finite number >= 0"),
    ([f"{B},Infiltrate,1,1,inf,2,,,"], "row 2, column 'w': value 'inf' is not a finite number >= 0"),
    ([f"images_002/images/{B},Infiltrate,1,1,2,2,,,"],
     "row 2, column 'Image Index': value 'images_002/images/00000002_000.png' is not an image file name"),
    ([*ROWS, f"{B},Effusion,64,10,1,5,,,"],
     "row 6, column 'Bbox [x': the box starts at 64, past the width 64 of images_002/images/00000002_000.png (64 x 48)"),
    ([f"{B},Effusion,10,48,5,4,,,"],  # inside 64, past 48: height is the image's first axis
     "row 2, column 'y': the box starts at 48, past the height 48 of images_002/images/00000002_000.png (64 x 48)"),
    ([f"{B},Effusion,63.6,10,3,5,,,"], "row 2, column 'w': the box (63.6 + 3) holds no pixel centre"),  # none left of 64
    ([f"{B},Effusion,10.6,10,0.8,5,,,"], "row 2, column 'w': the box (10.6 + 0.8) holds no pixel centre"),
])
def test_bad_rows_are_refused_naming_file_row_and_column_before_anything_is_written(nih, tmp_path, capsys, rows,
                                                                                     message):
    csv = write_boxes(tmp_path / "boxes.csv", rows)
    assert main(["prepare-nih-boxes", "--root", str(nih), "--boxes", str(csv), "--out", str(tmp_path / "truth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {csv} ") and message in err, err
    assert not (tmp_path / "truth").exists()


def test_a_box_past_the_edge_is_clipped_to_the_image_and_counted(nih, tmp_path, capsys):
    """A border drawn past the image stopped the whole conversion; the box now ends at the edge, and the
    summary says how many were cut."""
    write_boxes(nih / "BBox_List_2017.csv", [f"{B},Effusion,50.2,40,20,9.5,,,"])  # past both 64 and 48
    assert main(["prepare-nih-boxes", "--root", str(nih), "--out", str(tmp_path / "truth")]) == 0
    assert "(1 boxes, 1 clipped at the image's edge)" in capsys.readouterr().out
    mask, annotated = read_truth(label_path(tmp_path / "truth", f"images_002/images/{B}"))
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[40:48, 50:64] = 1  # pixel centres 50.5.. and 40.5.. up to the last column and row
    effusion = OBSERVATIONS.index("Pleural Effusion")
    assert (mask[effusion] == expected).all() and np.flatnonzero(annotated).tolist() == [effusion]
    write_boxes(nih / "BBox_List_2017.csv", [f"{B},Effusion,10,40,5,9.5,,,", f"{A},Mass,60,10,5,4,,,"])  # past 48 only; 64 only
    assert main(["prepare-nih-boxes", "--root", str(nih), "--out", str(tmp_path / "each")]) == 0
    assert "(2 boxes, 2 clipped at the image's edge)" in capsys.readouterr().out


def test_images_not_under_root_are_listed_up_to_three(nih, tmp_path, capsys):
    absent = [f"0000000{k}_000.png" for k in range(5, 9)]
    csv = write_boxes(tmp_path / "boxes.csv", [*ROWS, *(f"{name},Mass,1,1,2,2,,," for name in absent)])
    assert main(["prepare-nih-boxes", "--root", str(nih), "--boxes", str(csv), "--out", str(tmp_path / "truth")]) == 2
    assert capsys.readouterr().err == (f"error: {nih}: 4 image(s) of boxes.csv not found under --root: "
                                       "00000005_000.png, 00000006_000.png, 00000007_000.png, ...\n")
    csv = write_boxes(tmp_path / "three.csv", [*ROWS, *(f"{name},Mass,1,1,2,2,,," for name in absent[:3])])
    assert main(["prepare-nih-boxes", "--root", str(nih), "--boxes", str(csv), "--out", str(tmp_path / "truth")]) == 2
    assert capsys.readouterr().err == (f"error: {nih}: 3 image(s) of three.csv not found under --root: "
                                       "00000005_000.png, 00000006_000.png, 00000007_000.png\n")  # all named: no '...'
    assert main(["prepare-nih-boxes", "--root", str(tmp_path), "--out", str(tmp_path / "truth")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'BBox_List_2017.csv'}: NIH's box list not found; "
                                       "pass --boxes\n")
    assert not (tmp_path / "truth").exists()


def test_command_prints_one_summary_line_and_refuses_earlier_truth_without_overwrite(nih, tmp_path, capsys):
    out = tmp_path / "truth"
    args = ["prepare-nih-boxes", "--root", str(nih), "--out", str(out)]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith(f"wrote 2 truth files to {out} (4 boxes) in ")
    assert line.endswith(" s; images boxed: Cardiomegaly 0, Lung Opacity 1, Lung Lesion 1, Pneumonia 0, Atelectasis 1, "
                         "Pneumothorax 0, Pleural Effusion 0\n")
    stale = out / "images_009/images/00099999_000.npz"  # another run's image
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    assert main(args) == 2
    assert capsys.readouterr().err == (f"error: {out}: already holds 3 truth file(s) (e.g. images_001/images/"
                                       "00000001_000.npz); pass --overwrite to replace them, or choose another --out\n")
    moved = write_boxes(tmp_path / "elsewhere.csv", ROWS[3:])
    assert main([*args, "--overwrite", "--boxes", str(moved)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz")) == ["images_002/images/00000002_000.npz"]


def test_boxed_images_missing_from_test_list_are_counted(nih, tmp_path, capsys):
    """The labelling advice (the validation list of a --validation test-list datalist) holds only for
    boxed images in test_list.txt: any others are counted, and without the list nothing is said."""
    assert convert(nih, tmp_path / "a").outside_test_list == 0
    (nih / "test_list.txt").write_text(f"{B}\n")
    assert main(["prepare-nih-boxes", "--root", str(nih), "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "1 boxed image(s) are not in test_list.txt: a prepare-nih --validation test-list datalist's validation "
        "list does not hold them (label them from another datalist)")
    (nih / "test_list.txt").unlink()
    assert convert(nih, tmp_path / "c").outside_test_list is None


def test_label_quality_scores_a_label_against_nih_box_truth(nih, tmp_path, capsys):
    """End to end: a label at A's datalist id covering its Atelectasis box exactly scores IoU 1; targets on
    observations not boxed on an image (Pneumothorax on A, Atelectasis on B) are neither scored nor false
    positives there."""
    assert main(["prepare-nih-boxes", "--root", str(nih), "--out", str(tmp_path / "truth")]) == 0
    ids = {Path(item["id"]).name: item["id"]
           for section in ("training", "validation") for item in build_nih_datalist(nih, validation="test-list").to_dict()[section]}
    state = np.full(14, -1, np.int8)
    mask = np.zeros((14, 16, 16), np.uint8)  # 16 x 16 labels enlarged to 48 x 64: a label pixel is 3 rows x 4 columns
    mask[ATELECTASIS, 2:4, 2:4] = 1  # rows 6-11, columns 8-15: the box
    mask[PNEUMOTHORAX, 10:, :] = 1
    state[[ATELECTASIS, PNEUMOTHORAX]] = 1
    write_label(label_path(tmp_path / "labels", ids[A]), mask, state, mask.astype(np.float32))
    write_label(label_path(tmp_path / "labels", ids[B]), mask, state, mask.astype(np.float32))
    capsys.readouterr()
    assert main(["label-quality", "--labels", f"doll={tmp_path / 'labels'}", "--truth", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "q"), "--bootstrap", "0"]) == 0
    result = json.loads((tmp_path / "q" / "label_quality.json").read_text())
    doll = result["labellings"]["doll"]
    assert result["images"] == 2
    iou = doll["iou"]["per_observation"]
    assert (iou["Atelectasis"]["value"], iou["Atelectasis"]["n"], iou["Pneumothorax"]["n"]) == (1.0, 1, 0)
    assert doll["hit"]["per_observation"]["Atelectasis"]["value"] == 1.0
    assert sum(doll["false_positive"].values()) == 0
    assert doll["truth_positive"] == {**dict.fromkeys(doll["truth_positive"], 0), "Atelectasis": 1, "Lung Opacity": 1,
                                      "Lung Lesion": 1}
    assert doll["truth_annotated"]["Atelectasis"] == 1 and doll["truth_annotated"]["Pneumothorax"] == 0
