"""Segmentation readers: JSRT raw, SCR-style folders, DoLL label files and the real shared lung set."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.segmentation import (
    LoadDollSample,
    LoadSegmentationSample,
    datalist_classes,
    epoch_sampler,
    first_n,
    folder_datalist,
    load_segmentation_datalist,
    read_doll_label,
    read_image,
    read_jsrt_img,
    scr_datalist,
    shared_lungs_datalist,
    split_by_hash,
)
from cxrdoll.data.transforms import load_image_pipeline


def test_jsrt_round_trip_big_endian_12_bit(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4096, size=(8, 8), dtype=np.uint16)
    path = tmp_path / "JPCLN001.IMG"
    raw.astype(">u2").tofile(path)
    assert np.array_equal(read_jsrt_img(path, shape=(8, 8)), raw)
    # full size via the default shape; JSRT stores 0 as white, read_image returns bright = dense
    full = np.zeros((2048, 2048), dtype=np.uint16)
    full[0, 0], full[0, 1] = 4095, 0
    full.astype(">u2").tofile(path)
    image = read_image(path)
    assert image.shape == (2048, 2048) and image[0, 0] == 0.0 and image[0, 1] == 1.0


def test_jsrt_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.IMG"
    np.zeros(10, dtype=">u2").tofile(path)
    with pytest.raises(ValueError, match=r"bad.IMG: 20 bytes, expected 8388608 for a 2048x2048 16-bit raw JSRT image"):
        read_jsrt_img(path)
    np.full((4, 4), 5000, dtype=">u2").tofile(path)
    with pytest.raises(ValueError, match="value 5000 exceeds the 12-bit range"):
        read_jsrt_img(path, shape=(4, 4))


def test_png_loading_matches_the_shared_image_pipeline(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(tmp_path / "a.png")
    mine = LoadSegmentationSample(32)({"image": str(tmp_path / "a.png")})["image"]
    reference = load_image_pipeline(32)({"image": str(tmp_path / "a.png")})["image"]
    assert torch.allclose(mine, reference)


def _scr_tree(tmp_path, n=5, size=16):
    """JSRT-like 2x-size raw images with SCR-style half-size GIF masks (one square per structure)."""
    (tmp_path / "jsrt").mkdir()
    structures = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
    for s in structures:
        (tmp_path / "scr" / s).mkdir(parents=True)
    for i in range(n):
        name = f"JPCLN{i:03d}"
        np.full((2 * size, 2 * size), 100 * i, dtype=">u2").tofile(tmp_path / "jsrt" / f"{name}.IMG")
        for k, s in enumerate(structures):
            m = np.zeros((size, size), dtype=np.uint8)
            m[k : k + 2, 0:4] = 255
            Image.fromarray(m).save(tmp_path / "scr" / s / f"{name}.gif")
    return structures


def test_scr_layout_datalist_and_aligned_masks(tmp_path, monkeypatch):
    import cxrdoll.data.segmentation as seg

    monkeypatch.setattr(seg, "JSRT_SHAPE", (32, 32))
    structures = _scr_tree(tmp_path)
    datalist = scr_datalist(tmp_path / "jsrt", tmp_path / "scr", val_fraction=0.4)
    assert datalist["classes"] == list(structures)
    assert len(datalist["training"]) == 3 and len(datalist["validation"]) == 2
    sample = LoadSegmentationSample(32, num_classes=5)(datalist["training"][0])
    assert sample["label"].shape == (5, 32, 32) and tuple(sample["orig_shape"].tolist()) == (32, 32)
    for k in range(5):  # the 16 px mask square [k:k+2, 0:4] doubles to [2k:2k+4, 0:8]
        expected = torch.zeros(32, 32)
        expected[2 * k : 2 * k + 4, 0:8] = 1
        assert torch.equal(sample["label"][k], expected)


def test_validation_split_is_the_rounded_fraction_of_smallest_sha1_digests():
    import hashlib

    ids = [f"JPCLN{i:03d}" for i in range(8)]
    by_digest = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    assert split_by_hash(ids, 0.2) == set(by_digest[:2])  # 8 x 0.2 = 1.6 rounds to 2, not down to 1
    assert split_by_hash(ids[::-1] + ids[:3], 0.2) == set(by_digest[:2])  # order and repeats do not matter
    assert split_by_hash(ids, 0.0) == set()


def test_an_ignore_mask_blanks_every_class_of_a_multi_class_item(tmp_path):
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "i.png")
    for k in range(3):
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 8 * k : 8 * k + 16] = 255  # overlapping the ignored rows in every class
        Image.fromarray(mask).save(tmp_path / f"m{k}.png")
    ignore = np.zeros((32, 32), np.uint8)
    ignore[4:10, :] = 255
    Image.fromarray(ignore).save(tmp_path / "ignore.png")
    item = {"image": str(tmp_path / "i.png"), "label": [str(tmp_path / f"m{k}.png") for k in range(3)],
            "ignore": str(tmp_path / "ignore.png")}
    label = LoadSegmentationSample(32, num_classes=3)(item)["label"]
    for k in range(3):
        assert torch.equal(torch.isnan(label[k]), torch.from_numpy(ignore > 0)), k
        expected = torch.zeros(32, 32)
        expected[:, 8 * k : 8 * k + 16] = 1
        assert torch.equal(label[k][~torch.isnan(label[k])], expected[torch.from_numpy(ignore == 0)]), k


def test_folder_datalist_missing_mask_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "x.png")
    with pytest.raises(FileNotFoundError, match=r"x.png: no mask for \['infection'\]"):
        folder_datalist(tmp_path / "images", {"infection": tmp_path / "masks"})


def test_mask_with_other_aspect_is_rejected(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.zeros((8, 4), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"m.png: mask shape \(8, 4\) does not match the aspect of image"):
        LoadSegmentationSample(32)({"image": str(tmp_path / "i.png"), "label": str(tmp_path / "m.png")})


def test_nifti_mask_and_relative_datalist(tmp_path):
    import nibabel as nib

    image = np.zeros((32, 32), np.uint8)
    image[1, 2] = 200
    Image.fromarray(image).save(tmp_path / "i.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[1, 2] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / "m.nii.gz"))
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"image": "i.png", "label": "m.nii.gz"}]}))
    items = load_segmentation_datalist(tmp_path / "d.json", "training")
    assert datalist_classes(tmp_path / "d.json") == ["foreground"]
    sample = LoadSegmentationSample(32, 1)(items[0])
    assert sample["label"][0, 1, 2] == 1 and sample["label"].sum() == 1 and sample["image"][0, 1, 2] > 0.7
    with pytest.raises(ValueError, match="num_train=2 but the training split has 1 items"):
        first_n(items, 2)



def test_datalist_given_by_a_relative_path_yields_absolute_paths(tmp_path, monkeypatch):
    """Items are copied into other datalists (sample-efficiency seeds), so their paths must not depend on the cwd."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.json").write_text(json.dumps({"training": [{"image": "i.png", "label": ["m.png"]}]}))
    monkeypatch.chdir(tmp_path)
    (item,) = load_segmentation_datalist("sub/d.json", "training")
    assert item["image"] == str(tmp_path / "sub" / "i.png")
    assert item["label"] == [str(tmp_path / "sub" / "m.png")]


def test_an_empty_split_is_refused_naming_the_datalist(tmp_path):
    """MONAI's engines would skip an empty loader with a warning: no training, no metrics, no error."""
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"image": "i.png", "label": "m.png"}], "validation": []}))
    assert len(load_segmentation_datalist(tmp_path / "d.json", "training")) == 1
    with pytest.raises(ValueError, match=f"^{tmp_path / 'd.json'}: 'validation' list is empty$"):
        load_segmentation_datalist(tmp_path / "d.json", "validation")


CLASSIFICATION_ITEM = {"image": "a.png", "id": "p1/a.png", "label": [0.0] * 14, "label_mask": [1] * 14}
DOLL_ITEM = {"image": "a.png", "label": "labels/a.npz", "id": "a.png"}
DOWNSTREAM_ITEM = {"image": "a.png", "label": ["masks/l/a.png", "masks/r/a.png"], "id": "a"}


@pytest.mark.parametrize(("kind", "item", "found"), [
    ("doll", CLASSIFICATION_ITEM, "training[1] (id 'p1/a.png') has 'label_mask', so it looks like a classification "
                                  "datalist (for cxr_classifier); cxr_seg_pretrain takes"),
    ("doll", DOWNSTREAM_ITEM, "training[1] (id 'a') has a 'label' of 2 mask files, so it looks like a downstream "
                              "segmentation datalist (for cxr_seg_adapter); cxr_seg_pretrain takes a DoLL label"),
    ("downstream", CLASSIFICATION_ITEM, "training[1] (id 'p1/a.png') has 'label_mask', so it looks like a "
                                        "classification datalist (for cxr_classifier); "
                                        "cxr_seg_adapter takes a downstream segmentation datalist"),
    ("downstream", DOLL_ITEM, "training[1] (id 'a.png') has a 'label' that is one .npz label file, so it looks like "
                              "a DoLL label datalist (for cxr_seg_pretrain); cxr_seg_adapter takes"),
    ("downstream", {"image": "a.png", "label": 3}, "training[1] has a 'label' that is not a file path: 3; "
                                                   "cxr_seg_adapter takes"),
])
def test_another_stages_datalist_is_refused_naming_the_item_and_the_stage_it_is_for(tmp_path, kind, item, found):
    """A classification datalist failed with a TypeError deep in a bundle; a mask list given to
    pre-training failed only once training had started."""
    good = {"doll": DOLL_ITEM, "downstream": DOWNSTREAM_ITEM}[kind]
    (tmp_path / "d.json").write_text(json.dumps({"training": [good, item]}))
    with pytest.raises(ValueError, match="^" + re.escape(f"{tmp_path / 'd.json'}: {found}")):
        load_segmentation_datalist(tmp_path / "d.json", "training", kind)
    (tmp_path / "d.json").write_text(json.dumps({"training": [good]}))
    assert len(load_segmentation_datalist(tmp_path / "d.json", "training", kind)) == 1


def _write_doll(path, state, size=8):
    mask = np.zeros((14, size, size), np.uint8)
    mask[:, :2, :2] = 1
    np.savez_compressed(path, mask=mask, state=np.asarray(state, np.int8))


def test_doll_label_states(tmp_path):
    state = [0] * 14
    state[2], state[5] = 1, -1
    _write_doll(tmp_path / "l.npz", state)
    label = read_doll_label(tmp_path / "l.npz")
    assert label[2].sum() == 4  # positive: the mask is the target
    assert label[0].sum() == 0  # negative: empty target even though the file's mask has pixels
    assert np.isnan(label[5]).all() and not np.isnan(np.delete(label, 5, 0)).any()
    np.savez_compressed(tmp_path / "bad.npz", mask=np.zeros((14, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="bad.npz: missing key 'state'"):
        read_doll_label(tmp_path / "bad.npz")
    np.savez_compressed(tmp_path / "bad2.npz", mask=np.zeros((3, 4, 4), np.uint8), state=np.zeros(3, np.int8))
    with pytest.raises(ValueError, match=r"bad2.npz: mask must be \(14, S, S\), got \(3, 4, 4\)"):
        read_doll_label(tmp_path / "bad2.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match=r"garbage.npz: not a readable label file \(not an .npz archive\)"):
        read_doll_label(tmp_path / "garbage.npz")
    state[7] = 2  # no state of the format: its mask must not pass as a positive target
    np.savez_compressed(tmp_path / "bad3.npz", mask=np.ones((14, 4, 4), np.uint8), state=np.array(state, np.int8))
    with pytest.raises(ValueError, match=r"bad3.npz: 'state' must be 14 values of -1/0/1, found \[0, 0, 1, 0, 0, -1, 0, 2,"):
        read_doll_label(tmp_path / "bad3.npz")


def test_doll_sample_with_truth_dir(tmp_path):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "view1_frontal.png")
    _write_doll(tmp_path / "l.npz", [-1] * 14)
    truth = np.zeros((14, 64, 64), np.uint8)
    truth[3, 8:16, 8:16] = 1
    (tmp_path / "truth" / "p1").mkdir(parents=True)
    np.savez_compressed(tmp_path / "truth" / "p1" / "view1_frontal.npz", mask=truth)
    item = {"image": str(tmp_path / "view1_frontal.png"), "label": str(tmp_path / "l.npz"), "id": "p1/view1_frontal.png"}
    doll = LoadDollSample(32)(item)
    assert doll["label"].shape == (len(OBSERVATIONS), 32, 32) and torch.isnan(doll["label"]).all()
    true = LoadDollSample(32, truth_dir=tmp_path / "truth")(item)
    assert true["label"][3, 4:8, 4:8].eq(1).all() and true["label"].sum() == 16
    annotated = np.ones(14, bool)
    annotated[12] = False  # CheXlocalize leaves Fracture unannotated: unknown, so ignored like state -1
    np.savez_compressed(tmp_path / "truth" / "p1" / "view1_frontal.npz", mask=truth, annotated=annotated)
    partial = LoadDollSample(32, truth_dir=tmp_path / "truth")(item)["label"]
    assert torch.isnan(partial).all(dim=2).all(dim=1).tolist() == [c == 12 for c in range(14)]
    assert torch.isnan(partial).sum() == 32 * 32 and partial.nansum() == 16


def test_shared_lung_set_masks_aligned_and_ignore_respected(shared_data):
    datalist = shared_lungs_datalist(shared_data / "seg_lungs_covid_ieee8023_v7labs")
    assert datalist["classes"] == ["lung"]
    assert len(datalist["training"]) == 122 and len(datalist["validation"]) == 24
    train_patients = {i["id"].split("_")[1] for i in datalist["training"]}
    assert not train_patients & {i["id"].split("_")[1] for i in datalist["validation"]}
    with_ignore = [i for i in datalist["training"] + datalist["validation"] if "ignore" in i]
    assert len(with_ignore) == 10
    item = with_ignore[0]
    raw_mask = np.asarray(Image.open(item["label"][0])) > 0
    raw_ignore = np.asarray(Image.open(item["ignore"])) > 0
    sample = LoadSegmentationSample(raw_mask.shape[0], 1)(item)  # no resizing when the image is square
    if raw_mask.shape[0] == raw_mask.shape[1]:
        label = sample["label"][0].numpy()
        assert np.array_equal(np.isnan(label), raw_ignore)
        assert np.array_equal(label[~raw_ignore] == 1, raw_mask[~raw_ignore])
    # masks are aligned with their images: the lungs are darker than the rest of the image
    for entry in datalist["validation"][:5]:
        s = LoadSegmentationSample(64, 1)(entry)
        lung = s["label"][0] == 1
        assert s["image"][0][lung].mean() < s["image"][0][~lung].mean()


def test_epoch_sampler_fixes_the_number_of_draws():
    draws = list(epoch_sampler(list(range(3)), 10))
    assert len(draws) == 10 and set(draws) <= {0, 1, 2}
    assert epoch_sampler(list(range(3)), None) is None
