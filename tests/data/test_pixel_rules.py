"""unit_range on wide images with a few extreme pixels, and 16-bit colour PNGs that Pillow reads as 8-bit."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdoll.data.pixels import robust_minmax, robust_range
from cxrdoll.data.transforms import load_image_pipeline, unit_range


def twelve_bit_image(shape=(64, 64)) -> np.ndarray:
    """12-bit detector data stored in 16 bits, 1120..4000 as in the review."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(1120, 4001, size=shape).astype(np.uint16)
    pixels[1, 1], pixels[2, 2] = 1120, 4000
    return pixels


def load_full_size(path: Path, size: int) -> np.ndarray:
    return load_image_pipeline(size=size)({"image": str(path)})["image"][0].numpy()


@pytest.mark.parametrize("hot", [4095, 4096, 65535])
def test_one_hot_pixel_does_not_change_the_scale_of_a_12_bit_image(tmp_path, hot):
    """The review's numbers: one pixel at 65535 loaded the rest as 0.000..0.045, one at 4096 as min-max."""
    pixels = twelve_bit_image()
    pixels[0, 0] = hot
    expected = pixels.astype(np.float64) / 4095  # every other pixel as if the hot one were not there
    expected[0, 0] = 1.0
    np.testing.assert_allclose(unit_range(pixels), expected, atol=1e-6)
    Image.fromarray(pixels).save(tmp_path / "hot.png")
    assert Image.open(tmp_path / "hot.png").mode == "I;16"
    loaded = load_full_size(tmp_path / "hot.png", 64)
    np.testing.assert_allclose(loaded, np.rint(expected * 255) / 255, atol=1e-6)


def test_full_16_bit_image_is_scaled_between_its_percentiles_and_clipped():
    """100x100: ranks 9 and 9990 (0.1 % and 99.9 %) fall on the body's own extremes, 10000 and 50000,
    whatever 5 dead pixels at 0 and 5 hot ones at 65535 do."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(10001, 50000, size=10000).astype(np.uint16)
    pixels[:20], pixels[20:40] = 10000, 50000
    pixels[40:45], pixels[45:50] = 0, 65535
    pixels = rng.permutation(pixels).reshape(100, 100)
    expected = np.clip((pixels.astype(np.float64) - 10000) / 40000, 0, 1)
    out = unit_range(pixels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # the same as numpy's own order statistics
    lo, hi = np.percentile(pixels, 0.1, method="lower"), np.percentile(pixels, 99.9, method="higher")
    assert (lo, hi) == (10000, 50000)


def test_without_extreme_pixels_the_rules_are_as_before():
    rng = np.random.default_rng(2)
    eight = rng.integers(0, 256, size=(40, 30)).astype(np.uint8)
    np.testing.assert_allclose(unit_range(eight), eight / 255, atol=1e-7)
    unit = rng.random((40, 30)).astype(np.float32)
    np.testing.assert_array_equal(unit_range(unit), unit)
    np.testing.assert_array_equal(unit_range(np.zeros((4, 4), np.uint16)), np.zeros((4, 4), np.float32))
    twelve = twelve_bit_image((40, 30))
    np.testing.assert_allclose(unit_range(twelve), twelve / 4095, atol=1e-6)
    # 8-bit data in a 16-bit type: min-max (/4095 would leave it near black)
    small = rng.integers(0, 201, size=(40, 30)).astype(np.uint16)
    small[0, 0], small[0, 1] = 0, 200
    np.testing.assert_allclose(unit_range(small), small / 200, atol=1e-6)
    full = np.tile(np.arange(256, dtype=np.uint16), 40)  # ranks 10 and 10229 of 10240: 0 and 255, 8-bit data
    np.testing.assert_allclose(unit_range(full), full / 255, atol=1e-6)  # hi = 255 is not 12-bit
    # a tiny image (< 1000 pixels) keeps plain min-max, as does a sparse one whose percentiles coincide
    tiny = np.array([[0, 100, 200, 60000]], np.uint16)
    np.testing.assert_allclose(unit_range(tiny), tiny / 60000, atol=1e-6)
    sparse = np.zeros((100, 100), np.int32)
    sparse[5, 5] = 70000
    np.testing.assert_array_equal(unit_range(sparse), (sparse == 70000).astype(np.float32))


def test_robust_range_takes_the_ranks_of_the_0_1st_and_99_9th_percentiles():
    """10000 distinct values 0..9999: ranks floor(0.001 * 9999) = 9 and ceil(0.999 * 9999) = 9990, numpy's
    'lower' and 'higher' percentiles (floor(0.001 * n) = 10, or a 0.2 % tail, would move them)."""
    values = np.random.default_rng(3).permutation(10000).astype(np.uint16).reshape(100, 100)
    assert robust_range(values) == (9.0, 9990.0)
    assert robust_range(values) == (np.percentile(values, 0.1, method="lower"), np.percentile(values, 99.9, method="higher"))
    assert robust_range(np.random.default_rng(4).permutation(100)) == (0.0, 99.0)  # 100 pixels: plain min-max


def test_robust_minmax_keeps_float64_and_gives_float32_otherwise():
    wide = np.array([0.0, 0.25, 1.0, 2.0])
    out = robust_minmax(wide, 0.0, 1.0)
    assert out.dtype == np.float64 and out.tolist() == [0.0, 0.25, 1.0, 1.0]
    assert robust_minmax(np.array([0, 50, 200], np.uint16), 0.0, 100.0).dtype == np.float32
    assert wide.tolist() == [0.0, 0.25, 1.0, 2.0]  # the input is not scaled in place


def write_png16(path: Path, samples: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB or grey+alpha)."""
    h, w = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("colour_type,stack,word", [(2, 3, "RGB"), (4, 2, "grey\\+alpha"), (6, 4, "RGBA")])
def test_16_bit_colour_and_grey_alpha_pngs_are_refused_naming_the_file(tmp_path, colour_type, stack, word):
    """Pillow keeps only their high byte: 12-bit data loaded as 0.000..0.059 instead of 0.27..0.98."""
    from cxrdoll.data.any_image import LoadAnyImaged, pil_error

    grey = twelve_bit_image((16, 16))
    path = tmp_path / f"ct{colour_type}.png"
    write_png16(path, np.dstack([grey] * (stack - 1) + [np.full_like(grey, 65535) if stack in (2, 4) else grey]),
                colour_type)
    message = rf"^{path}: 16-bit {word} PNG, .*convert it to single-channel 16-bit greyscale$"
    with pytest.raises(ValueError, match=message) as caught:
        LoadAnyImaged(16)({"image": str(path)})
    assert "\n" not in str(caught.value)
    assert isinstance(pil_error(str(path)), ValueError)  # the labeller's reason for skipping it
    from cxrdoll.data.segmentation import read_image, read_mask

    for read in (read_image, read_mask):  # segmentation images and masks: the same refusal
        with pytest.raises(ValueError, match=message):
            read(path)


def test_16_bit_grey_png_written_by_hand_still_loads(tmp_path):
    grey = twelve_bit_image((16, 16))
    write_png16(tmp_path / "grey.png", grey, 0)
    np.testing.assert_allclose(load_full_size(tmp_path / "grey.png", 16), np.rint(grey / 4095 * 255) / 255, atol=1e-6)


def test_an_empty_image_or_non_finite_pixels_are_refused_in_one_line():
    """NaN pixels gave an all-NaN image through the percentile rule (all zeros before it), and an empty
    array an IndexError, which the commands print as a bug's traceback."""
    with pytest.raises(ValueError, match="^an empty image"):
        unit_range(np.zeros((0, 4), np.uint16))
    with pytest.raises(ValueError, match="^the image has NaN or infinite pixel values$"):
        unit_range(np.array([[np.nan, 1.0, 3.0]], np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        unit_range(np.array([[np.inf, 0.5]]))


def test_unit_range_reads_a_torch_tensor_as_its_numpy_array():
    """A tensor failed with "Cannot interpret 'torch.uint8' as a data type" (numpy dtype checks on a torch dtype)."""
    pixels = twelve_bit_image()
    for tensor in (torch.from_numpy(pixels.astype(np.int32)), torch.from_numpy((pixels // 16).astype(np.uint8))):
        np.testing.assert_array_equal(unit_range(tensor), unit_range(tensor.numpy()))


def test_the_12_bit_rule_includes_both_of_its_bounds():
    """lo == 0 (black borders) and hi == 4095 (a saturated 12-bit detector) are still 12-bit data: /4095,
    not min-max on the percentiles."""
    black_border = twelve_bit_image()
    black_border[:2] = 0  # 3 % of the pixels: the 0.1st percentile is 0, the 99.9th 4000
    np.testing.assert_allclose(unit_range(black_border), black_border / 4095, atol=1e-6)
    saturated = twelve_bit_image()
    saturated[:2] = 4095  # the 0.1st percentile stays 1120
    np.testing.assert_allclose(unit_range(saturated), saturated / 4095, atol=1e-6)


def test_floats_and_booleans_already_in_the_unit_range_are_kept_as_they_are():
    """Not stretched to [0, 1]: a dim float image (0..0.5) keeps its brightness, one from 0.25 up keeps its floor,
    and a full boolean mask stays ones (min-max would make a constant image all zeros)."""
    dim = np.linspace(0.0, 0.5, 12, dtype=np.float32).reshape(3, 4)
    bright = np.linspace(0.25, 1.0, 12, dtype=np.float64).reshape(3, 4)
    for image in (dim, bright):
        out = unit_range(image)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, image.astype(np.float32))
    np.testing.assert_array_equal(unit_range(np.ones((3, 4), bool)), np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="^an empty image"):  # not numpy's "zero-size array" error
        unit_range(np.zeros((0, 4), np.float32))


def test_an_8_bit_colour_png_16_rows_tall_is_not_taken_for_16_bit(tmp_path):
    """The bit depth is IHDR byte 24, right after the height's low byte (23), which is 16 here."""
    rgb = np.zeros((16, 8, 3), np.uint8)
    rgb[3, 5] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    loaded = load_full_size(tmp_path / "rgb.png", 16)  # 8 columns stretched to 16
    assert loaded[3].argmax() in (10, 11) and loaded.max() == 1.0
