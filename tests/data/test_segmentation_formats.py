"""Segmentation readers on the formats a review found mishandled: duplicate stems, colour and
palette masks, JPEG masks and DICOM images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image

from cxrdoll.data.segmentation import (
    LoadSegmentationSample,
    folder_datalist,
    folder_items,
    read_image,
    read_mask,
    shared_lungs_datalist,
)
from cxrdoll.dicom.loader import load_cxr_dicom
from cxrdoll.dicom.transforms import dicom_image_transforms
from tests.dicom.synthetic_dicom import make_cr, save


def _truth(shape=(20, 16)):
    truth = np.zeros(shape, bool)
    truth[4:12, 3:9] = True
    return truth


def _png(path, array, **kwargs):
    Image.fromarray(array, **kwargs).save(path)
    return path


# 1. duplicate stems


@pytest.mark.parametrize("name", ["...png", "..png"])
def test_inference_folder_refuses_an_image_whose_stem_names_no_folder(tmp_path, name):
    """'...png' has the stem '..': its id named OUT/.. and its masks were written outside OUT."""
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name, format="PNG")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="is not a relative path inside") as refused:
        folder_items(tmp_path)
    assert str(tmp_path / name) in str(refused.value)


@pytest.mark.parametrize("names", [("scan.jpg", "scan.png"), ("a.PNG", "a.png"), ("A.png", "a.png")])
def test_inference_folder_refuses_images_sharing_a_stem(tmp_path, names):
    """Ids are stems and name OUT/<id>/: the second image's outputs would replace the first's."""
    for name in names:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name, format="PNG")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "other.png")
    with pytest.raises(ValueError, match="have the same file stem") as refused:
        folder_items(tmp_path)
    message = str(refused.value)
    assert "\n" not in message and all(str(tmp_path / name) in message for name in names)


def test_folder_datalist_refuses_images_or_masks_sharing_a_stem(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _png(tmp_path / "images" / "case3.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "masks" / "case3.png", np.zeros((4, 4), np.uint8))
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "masks" / "case3.gif")
    with pytest.raises(ValueError, match=r"mask folder for 'lesion' .*case3.gif and .*case3.png have the same file stem"):
        folder_datalist(tmp_path / "images", {"lesion": tmp_path / "masks"})
    (tmp_path / "masks" / "case3.gif").unlink()
    _png(tmp_path / "images" / "case3.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"case3.jpg and .*case3.png have the same file stem 'case3'"):
        folder_datalist(tmp_path / "images", {"lesion": tmp_path / "masks"})


def test_shared_lung_layout_refuses_two_images_with_one_id(tmp_path):
    items = [{"image": f"images/{d}/p1.png", "label": f"masks/{d}/p1.png"} for d in ("a", "b")]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items[:1], "validation": items[1:]}))
    with pytest.raises(ValueError, match=r"a/p1.png and .*b/p1.png have the same file stem 'p1'"):
        shared_lungs_datalist(tmp_path)


# 2. mask colour modes


@pytest.mark.parametrize("palette", [
    [0, 0, 0, 255, 255, 255],  # index 0 black background, 1 white structure
    [255, 255, 255, 0, 0, 0],  # Pillow's quantize and ADAPTIVE palettes: white structure at index 0
    [0, 0, 0, 1, 0, 0],  # a structure in a colour whose brightness rounds to 0
])
def test_palette_mask_is_read_by_the_colours_it_shows(tmp_path, palette):
    """By index, the second palette came out inverted (3,696 pixels inside against 400); by brightness,
    the third came out empty."""
    truth = _truth()
    index = np.where(truth, 1 if palette[:3] == [0, 0, 0] else 0, 0 if palette[:3] == [0, 0, 0] else 1)
    im = Image.fromarray(index.astype(np.uint8), mode="P")
    im.putpalette(palette + [0] * (768 - len(palette)))
    im.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    assert np.array_equal(read_mask(tmp_path / "m.png"), truth)
    quantized = Image.fromarray(truth.astype(np.uint8) * 255, mode="L").convert("RGB").quantize(2)
    quantized.save(tmp_path / "q.gif")
    assert np.array_equal(read_mask(tmp_path / "q.gif"), truth)


@pytest.mark.parametrize("mode, inside, outside", [
    ("RGB", (1, 0, 0), (0, 0, 0)),  # brightness round(0.299) = 0
    ("RGB", (0, 0, 2), (0, 0, 0)),
    ("RGBA", (1, 0, 0, 255), (0, 0, 0, 255)),
    ("RGBA", (0, 255, 0, 0), (0, 0, 0, 255)),  # alpha ignored both ways
    ("LA", (3, 0), (0, 255)),
])
def test_colour_masks_count_any_non_zero_colour_channel(tmp_path, mode, inside, outside):
    truth = _truth()
    pixels = np.where(truth[..., None], np.array(inside, np.uint8), np.array(outside, np.uint8))
    Image.fromarray(pixels, mode=mode).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), truth)


def test_colour_images_keep_their_brightness(tmp_path):
    """Only masks changed: an RGB image is still greyscale by brightness."""
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[..., 0] = 100
    Image.fromarray(pixels).save(tmp_path / "i.png")
    assert np.allclose(read_image(tmp_path / "i.png"), round(0.299 * 100) / 255)


# 3. JPEG masks


@pytest.mark.parametrize("quality", [95, 75])
def test_jpeg_masks_are_thresholded_at_mid_range(tmp_path, quality):
    """Compression artefacts are small non-zero values around every edge: '!= 0' grew the mask."""
    yy, xx = np.mgrid[0:64, 0:64]
    truth = ((yy - 32) / 20) ** 2 + ((xx - 30) / 12) ** 2 <= 1
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "m.jpg", quality=quality)
    assert (np.asarray(Image.open(tmp_path / "m.jpg")) != 0).sum() > truth.sum()  # the artefacts are there
    assert np.array_equal(read_mask(tmp_path / "m.jpg"), truth)
    Image.fromarray(np.repeat(truth[..., None].astype(np.uint8) * 255, 3, -1)).save(tmp_path / "c.jpeg", quality=quality)
    assert np.array_equal(read_mask(tmp_path / "c.jpeg"), truth)
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "t.tif", compression="jpeg", quality=quality)
    assert np.array_equal(read_mask(tmp_path / "t.tif"), truth)  # JPEG inside TIFF is as lossy


def test_lossless_masks_keep_any_non_zero(tmp_path):
    truth = _truth()
    _png(tmp_path / "m.png", truth.astype(np.uint8))  # 0/1 values
    assert np.array_equal(read_mask(tmp_path / "m.png"), truth)


# 4. DICOM images


def _cr(path, photometric="MONOCHROME2"):
    rng = np.random.default_rng(0)
    return save(make_cr(rng.integers(0, 4096, (40, 32)).astype(np.uint16), BitsStored=12, HighBit=11,
                        PhotometricInterpretation=photometric), path)


@pytest.mark.parametrize("name, photometric", [("x.dcm", "MONOCHROME2"), ("X.DICOM", "MONOCHROME1")])
def test_dicom_images_read_as_the_classifier_reads_them(tmp_path, name, photometric):
    path = _cr(tmp_path / name, photometric)
    assert np.array_equal(read_image(path), load_cxr_dicom(path).array[0])
    mine = LoadSegmentationSample(32)({"image": str(path)})
    reference = Compose(dicom_image_transforms(("image",), 32))({"image": str(path)})["image"]
    assert torch.allclose(mine["image"], reference) and tuple(mine["orig_shape"].tolist()) == (40, 32)


def test_dicom_images_in_datalists_and_inference_folders_but_not_as_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _cr(tmp_path / "images" / "p1.dcm")
    truth = _truth((40, 32))
    _png(tmp_path / "masks" / "p1.png", truth.astype(np.uint8) * 255)
    datalist = folder_datalist(tmp_path / "images", {"lung": tmp_path / "masks"}, val_fraction=0)
    (item,) = datalist["training"]
    assert item["id"] == "p1" and item["image"].endswith("p1.dcm")
    label = LoadSegmentationSample(32, 1)(item)["label"]
    assert label.shape == (1, 32, 32) and 0 < label.sum() < truth.sum()
    assert [i["id"] for i in folder_items(tmp_path / "images")] == ["p1"]
    with pytest.raises(ValueError, match=r"p1.dcm: unsupported mask file type '.dcm'"):
        read_mask(tmp_path / "images" / "p1.dcm")


def test_unreadable_dicom_image_is_named(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(ValueError, match=r"^\S*bad.dcm: not a"):
        read_image(tmp_path / "bad.dcm")
    with pytest.raises(FileNotFoundError, match=r"gone.dcm: file not found"):
        read_image(tmp_path / "gone.dcm")
