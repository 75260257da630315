"""The shared image pipeline: (1, S, S) float32 in [0, 1], array [y, x] == PNG pixel (x, y)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrdoll.data.transforms import load_image_pipeline


def test_marker_pixel_keeps_its_row_and_column(tmp_path):
    pixels = np.zeros((32, 32), np.uint8)
    pixels[3, 20] = 255  # row 3, column 20: x=20, y=3 in the PNG
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "marker.png")  # RGB input becomes grey
    image = load_image_pipeline(size=32)({"image": str(tmp_path / "marker.png")})["image"]
    assert image.shape == (1, 32, 32) and image.dtype.is_floating_point
    assert image[0, 3, 20] == 1.0 and float(image.sum()) == 1.0


@pytest.mark.parametrize("top", [4095, 65535])
def test_16_bit_pngs_load_as_the_segmentation_reader_scales_them(tmp_path, top):
    """12-bit in 16 is /4095, full 16-bit is min-max; PIL's own 'L' conversion would clip both to white."""
    from cxrdoll.data.segmentation import read_image

    ramp = np.linspace(0, top, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode.startswith("I")
    image = load_image_pipeline(size=32)({"image": str(tmp_path / "ramp.png")})["image"][0].numpy()
    np.testing.assert_allclose(image, read_image(tmp_path / "ramp.png"), atol=0.5 / 255 + 1e-6)
    assert image.min() == 0.0 and image.max() == 1.0 and 0.45 < image.mean() < 0.55


def test_real_nih_pngs_load_exactly_as_pil_reads_them(shared_data):
    files = sorted((shared_data / "cls_nih_cxr14_64px" / "images").glob("*.png"))[:6]
    assert len(files) == 6
    pipeline = load_image_pipeline(size=64)
    for f in files:
        image = pipeline({"image": str(f)})["image"]
        expected = np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0
        assert tuple(image.shape) == (1, 64, 64) and str(image.dtype) == "torch.float32"
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)


def test_real_non_square_cxr_is_resized_by_area_without_transposing(shared_data):
    files = sorted((shared_data / "seg_lungs_covid_ieee8023_v7labs" / "images").glob("*.png"))
    f = next(p for p in files if Image.open(p).size[0] != Image.open(p).size[1])
    image = load_image_pipeline(size=64)({"image": str(f)})["image"][0].numpy()
    reference = np.asarray(Image.open(f).convert("L").resize((64, 64), Image.Resampling.BOX), np.float32) / 255.0
    assert np.abs(image - reference).mean() < 0.01  # same area averaging, up to PIL's 8-bit rounding
    assert np.abs(image - reference.T).mean() > 5 * np.abs(image - reference).mean()


def test_downsizing_averages_each_block_in_row_column_order(tmp_path):
    """6 x 6 to 2 x 2 is the mean of each 3 x 3 block: a bright corner pixel gives 1/9 of its value
    (bilinear sampling at the block centres would give 0), and a pixel in the top-right block stays there."""
    pixels = np.zeros((6, 6), np.uint8)
    pixels[0, 0], pixels[0, 5] = 255, 90
    Image.fromarray(pixels).save(tmp_path / "dots.png")
    image = load_image_pipeline(size=2)({"image": str(tmp_path / "dots.png")})["image"][0].numpy()
    np.testing.assert_allclose(image, [[1 / 9, 90 / 255 / 9], [0, 0]], atol=1e-6)


@pytest.mark.parametrize("size", [16, 48])
def test_output_size_follows_the_argument(tmp_path, size):
    Image.fromarray(np.full((40, 30), 128, np.uint8)).save(tmp_path / "grey.png")
    image = load_image_pipeline(size=size)({"image": str(tmp_path / "grey.png")})["image"]
    assert tuple(image.shape) == (1, size, size)
    np.testing.assert_allclose(image.numpy(), 128 / 255, atol=1e-6)


def test_a_float_tiff_is_scaled_by_the_pixel_rules_not_clipped_by_pil(tmp_path):
    """PIL's own 'L' conversion of a float ('F') image clips at 0 and 255: values 0..1 loaded black."""
    from cxrdoll.data.transforms import unit_range

    ramp = np.linspace(0.0, 1.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "ramp.tif")
    assert Image.open(tmp_path / "ramp.tif").mode == "F"
    image = load_image_pipeline(size=16)({"image": str(tmp_path / "ramp.tif")})["image"][0].numpy()
    np.testing.assert_allclose(image, np.rint(unit_range(ramp) * 255) / 255, atol=1e-6)
    assert image.max() == 1.0
