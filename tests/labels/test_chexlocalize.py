import json

import numpy as np
import pytest

from cxrdoll.cli import main
from cxrdoll.constants import OBSERVATIONS
from cxrdoll.labels.chexlocalize import CHANNELS, convert, rle_pixels
from cxrdoll.labels.quality import read_truth
from cxrdoll.labels.writer import label_path

mask_util = pytest.importorskip("pycocotools.mask")

TEN = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Lung Lesion",
       "Lung Opacity", "Pleural Effusion", "Pneumothorax", "Support Devices")
FRONTAL, SECOND, LATERAL = ("patient64541_study1_view1_frontal", "patient64542_study2_view1_frontal",
                            "patient64542_study2_view2_lateral")


def _rle(mask: np.ndarray) -> dict:
    """As CheXlocalize stores a segmentation: pycocotools' RLE with its counts as text."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def _masks(shape: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Ten masks of one image: irregular blobs, some empty (the image lacks those findings)."""
    rng = np.random.default_rng(seed)
    masks = {name: np.zeros(shape, np.uint8) for name in TEN}
    for name in TEN[seed % 3::3]:
        masks[name] = (rng.random(shape) < 0.4).astype(np.uint8)
    return masks


@pytest.fixture
def gt(tmp_path):
    """Two frontal images (non-square; one says 'Airspace Opacity', as older releases do) and one lateral."""
    masks = {FRONTAL: _masks((7, 11), 0), SECOND: _masks((9, 5), 1), LATERAL: _masks((9, 6), 2)}
    masks[FRONTAL]["Lung Opacity"][2:5, 3:9] = 1
    masks[FRONTAL]["Airspace Opacity"] = masks[FRONTAL].pop("Lung Opacity")
    masks[FRONTAL]["Edema"][...] = 0  # the image lacks it: an empty segmentation
    doc = {key: {name: _rle(m) for name, m in image.items()} for key, image in masks.items()}
    path = tmp_path / "gt_segmentations_val.json"
    path.write_text(json.dumps(doc))
    return path, masks


def _channel(name: str) -> int:
    return OBSERVATIONS.index(CHANNELS[name])


def test_truth_files_decode_back_to_the_segmentations_at_the_labels_paths(gt, tmp_path):
    path, masks = gt
    out = tmp_path / "truth"
    done = convert(path, out)
    assert (done.written, done.other_views) == (2, 1)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert files == ["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.npz",
                     "CheXpert-v1.0-small/valid/patient64542/study2/view1_frontal.npz"]
    # where the labeller writes the label of prepare-chexpert's id (valid.csv's Path) for that image
    assert label_path(out, "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg") == out / files[0]
    for key, name in ((FRONTAL, files[0]), (SECOND, files[1])):
        with np.load(out / name) as data:
            assert sorted(data.files) == ["annotated", "mask"]
            mask, annotated = data["mask"], data["annotated"]
        assert mask.dtype == np.uint8 and annotated.dtype == bool
        assert mask.shape == (14, *masks[key]["Atelectasis"].shape)
        assert [OBSERVATIONS[c] for c in np.flatnonzero(annotated)] == [o for o in OBSERVATIONS if o in TEN]
        for pathology, expected in masks[key].items():
            np.testing.assert_array_equal(mask[_channel(pathology)], expected)
        assert not mask[~annotated].any()
        np.testing.assert_array_equal(read_truth(out / name)[1], annotated)
    with np.load(out / files[0]) as data:
        assert data["mask"][OBSERVATIONS.index("Lung Opacity"), 2:5, 3:9].all()  # 'Airspace Opacity'
        assert not data["mask"][OBSERVATIONS.index("Edema")].any()
    non_empty = {o: sum(m[p].any() for m in masks.values() if m is not masks[LATERAL] for p in m if CHANNELS[p] == o)
                 for o in done.non_empty}
    assert done.non_empty == non_empty and list(done.non_empty) == [o for o in OBSERVATIONS if o in TEN]


def test_views_all_and_another_prefix(gt, tmp_path):
    path, masks = gt
    out = tmp_path / "truth"
    done = convert(path, out, prefix="CheXpert-v1.0/valid/", views="all")
    assert (done.written, done.other_views) == (3, 0)
    lateral = out / "CheXpert-v1.0/valid/patient64542/study2/view2_lateral.npz"
    np.testing.assert_array_equal(read_truth(lateral)[0][_channel("Pleural Effusion")], masks[LATERAL]["Pleural Effusion"])
    with pytest.raises(ValueError, match=r"--prefix '../valid' is not a relative path inside the output folder"):
        convert(path, tmp_path / "other", prefix="../valid")


def test_command_prints_one_summary_line_and_refuses_earlier_truth_without_overwrite(gt, tmp_path, capsys):
    path, _ = gt
    out = tmp_path / "truth"
    args = ["prepare-chexlocalize", "--gt", str(path), "--out", str(out)]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith(f"wrote 2 truth files to {out / 'CheXpert-v1.0-small/valid'} "
                                                      "(1 lateral left out) in ")
    assert "non-empty segmentations: Enlarged Cardiomediastinum " in line and "Support Devices " in line
    stale = out / "CheXpert-v1.0-small/valid/patient1/study1/view1_frontal.npz"  # another run's image
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    assert main(args) == 2
    assert capsys.readouterr().err == (f"error: {out / 'CheXpert-v1.0-small/valid'}: already holds 3 truth file(s) "
                                       "(e.g. patient1/study1/view1_frontal.npz); pass --overwrite to replace them, or choose another --out\n")
    assert main([*args, "--overwrite"]) == 0
    assert not stale.exists() and len(list(out.rglob("*.npz"))) == 2
    capsys.readouterr()
    assert main([*args, "--views", "all", "--prefix", "CheXpert-v1.0-small/test"]) == 0  # another prefix: no clash
    assert len(list(out.rglob("*.npz"))) == 5
    assert capsys.readouterr().out.startswith(f"wrote 3 truth files to {out / 'CheXpert-v1.0-small/test'} in ")  # none left out


def _bad_gt(tmp_path, doc) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    return str(path)


EMPTY = _rle(np.zeros((4, 6), np.uint8))


@pytest.mark.parametrize("doc, message", [
    ({"patient1_study1_view1_frontal.jpg": {"Edema": EMPTY}},
     "'patient1_study1_view1_frontal.jpg' is not a CheXlocalize CXR id (patient<N>_study<N>_view<N>_frontal or _lateral)"),
    ({"patient1_study1_view1_ap": {"Edema": EMPTY}}, "'patient1_study1_view1_ap' is not a CheXlocalize CXR id"),
    ({"patient1_study1_view1_frontal": {"Fracture": EMPTY}},
     "'patient1_study1_view1_frontal': unknown pathology 'Fracture'; expected one of ['Airspace Opacity', "),
    # gt_annotations_*.json (polygons, as CheXlocalize ships them beside the RLE file) given by mistake
    ({"patient1_study1_view1_frontal": {"img_size": [4, 6], "Edema": [[[1, 1], [2, 2], [1, 2]]]}},
     "'patient1_study1_view1_frontal' holds 'img_size': this is CheXlocalize's polygon file (gt_annotations_*.json); "
     "pass its RLE masks, gt_segmentations_*.json"),
    ({"patient1_study1_view1_frontal": {"Edema": EMPTY, "Atelectasis": _rle(np.zeros((6, 4)))}},
     "'patient1_study1_view1_frontal': pathologies differ in size: Edema [4, 6], Atelectasis [6, 4]"),
    # each size is named by its first pathology
    ({"patient1_study1_view1_frontal": {"Edema": EMPTY, "Atelectasis": _rle(np.zeros((6, 4))), "Cardiomegaly": EMPTY}},
     "'patient1_study1_view1_frontal': pathologies differ in size: Edema [4, 6], Atelectasis [6, 4]"),
    ({"patient1_study1_view1_frontal": {}}, "'patient1_study1_view1_frontal': no pathology segmentation"),
    ({"patient1_study1_view1_frontal": {"Edema": {"size": [4, 7], "counts": EMPTY["counts"]}}},
     "'patient1_study1_view1_frontal', 'Edema': 'counts' covers 24 pixels, not the 4 x 7 of its size"),
    ({"patient1_study1_view1_frontal": {"Edema": {"size": [4, 6], "counts": ""}}},
     "'patient1_study1_view1_frontal', 'Edema': 'counts' is not a compressed RLE, not the 4 x 6 of its size"),
    # runs of 5 and -1 pixels add up to the size, but a negative run is no RLE (pycocotools would decode garbage)
    ({"patient1_study1_view1_frontal": {"Edema": {"size": [2, 2], "counts": "5O"}}},
     "'patient1_study1_view1_frontal', 'Edema': 'counts' is not a compressed RLE, not the 2 x 2 of its size"),
    ({"patient1_study1_view1_frontal": {"Edema": {"size": [4, 6], "counts": [24]}}},
     "'patient1_study1_view1_frontal', 'Edema': 'counts' must be a compressed RLE string (pycocotools)"),
    ({"patient1_study1_view1_frontal": {"Edema": {"size": [4], "counts": "f0"}}},
     "'patient1_study1_view1_frontal', 'Edema': expected {'size': [h, w], 'counts': ...} with positive h and w, "
     "got size [4]"),
    ({"patient1_study1_view1_frontal": {"Edema": {"size": [0, 6], "counts": "0"}}},  # an empty image: 0 pixels, 0 counted
     "'patient1_study1_view1_frontal', 'Edema': expected {'size': [h, w], 'counts': ...} with positive h and w, "
     "got size [0, 6]"),
    ({"patient1_study1_view1_frontal": {"Edema": {"size": [True, 24], "counts": EMPTY["counts"]}}},  # JSON true is no 1
     "'patient1_study1_view1_frontal', 'Edema': expected {'size': [h, w], 'counts': ...} with positive h and w, "
     "got size [True, 24]"),
    ({"patient1_study1_view1_frontal": {"Lung Opacity": EMPTY, "Airspace Opacity": EMPTY}},
     "'patient1_study1_view1_frontal': 'Lung Opacity' is given twice ('Airspace Opacity' is its older name)"),
    ({"patient1_study1_view2_lateral": {"Edema": EMPTY}}, "bad.json: no frontal image; nothing written"),
    ([], "bad.json: expected a JSON object of CXR id -> pathology segmentations"),
])
def test_malformed_segmentations_are_refused_naming_the_file_and_key(tmp_path, capsys, doc, message):
    path = _bad_gt(tmp_path, doc)
    assert main(["prepare-chexlocalize", "--gt", path, "--out", str(tmp_path / "truth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and message in err, err
    assert not (tmp_path / "truth").exists()  # checked before anything is written


def test_a_decoded_mask_of_another_shape_than_its_size_is_refused(tmp_path, capsys, monkeypatch):
    path = _bad_gt(tmp_path, {"patient1_study1_view1_frontal": {"Edema": _rle(np.ones((4, 6)))}})
    monkeypatch.setattr(mask_util, "decode", lambda rles: np.zeros((6, 4, len(rles)), np.uint8))
    assert main(["prepare-chexlocalize", "--gt", path, "--out", str(tmp_path / "truth")]) == 2
    assert capsys.readouterr().err == (f"error: {path}: 'patient1_study1_view1_frontal': decoded masks are (6, 4), "
                                       "not the size [4, 6] they give\n")


def test_a_one_pixel_segmentation_and_a_killed_writes_temporary(tmp_path):
    """The smallest finding, one pixel, is a truth mask and counted non-empty; a temporary a killed run
    left beside the truth files, or a macOS ``._`` file (label-quality skips both), is no earlier truth file
    to refuse or remove."""
    one = np.zeros((4, 6), np.uint8)
    one[2, 3] = 1
    path = _bad_gt(tmp_path, {"patient1_study1_view1_frontal": {"Edema": _rle(one), "Atelectasis": EMPTY}})
    out = tmp_path / "truth"
    temporary = out / "CheXpert-v1.0-small/valid/patient1/study1/.view1_frontal.npz.k3j4h5g6.tmp.npz"
    temporary.parent.mkdir(parents=True)
    temporary.write_bytes(b"partial")
    fork = temporary.parent / "._view1_frontal.npz"  # macOS's resource fork, which label-quality skips too
    fork.write_bytes(b"fork")
    done = convert(path, out)
    assert (done.written, done.non_empty["Edema"], done.non_empty["Atelectasis"]) == (1, 1, 0)
    convert(path, out, overwrite=True)
    assert fork.read_bytes() == b"fork"  # not another run's truth: --overwrite leaves it
    mask, annotated = read_truth(out / "CheXpert-v1.0-small/valid/patient1/study1/view1_frontal.npz")
    np.testing.assert_array_equal(mask[_channel("Edema")], one)
    assert np.flatnonzero(annotated).tolist() == sorted([_channel("Atelectasis"), _channel("Edema")])


def test_rle_pixels_counts_what_pycocotools_encoded():
    rng = np.random.default_rng(0)
    for k in range(60):
        shape = tuple(rng.integers(1, 200, 2))
        mask = rng.random(shape) < rng.random() ** 3  # from nearly empty to dense, long and short runs
        mask[...] = mask if k % 4 else k % 8 == 0  # also all empty and all full
        assert rle_pixels(_rle(mask)["counts"]) == shape[0] * shape[1]
    assert rle_pixels(_rle(np.ones((2320, 2828)))["counts"]) == 2320 * 2828  # runs of several characters
    assert rle_pixels("") == rle_pixels("31:0a") == rle_pixels("3é") == -1
    assert rle_pixels("5O") == -1  # runs 5 and -1: a negative run
