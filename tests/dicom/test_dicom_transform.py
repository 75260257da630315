"""LoadCXRDicomd: the MONAI transform bundles use for DICOM input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from PIL import Image

from cxrdoll.dicom.transforms import LoadCXRDicomd, dicom_image_transforms
from cxrdoll.data.transforms import load_image_transforms
from tests.dicom.synthetic_dicom import make_cr, save


def test_transform_gives_metatensor_with_spacing(tmp_path):
    pixels = (np.arange(64 * 48) % 977).reshape(64, 48).astype(np.uint16)
    path = save(make_cr(pixels, PhotometricInterpretation="MONOCHROME1"), tmp_path / "a.dcm")
    out = LoadCXRDicomd(keys="image")({"image": str(path), "id": "a"})
    image = out["image"]
    assert isinstance(image, MetaTensor) and image.shape == (1, 64, 48) and image.dtype == torch.float32
    # MONOCHROME1, min-max (no window) between ranks 3 and 3068 of the 3072 pixels (0.1 % and 99.9 %):
    # 0 and 975, so the three pixels at 976 clip to 1 before inversion.
    assert (np.percentile(pixels, 0.1, method="lower"), np.percentile(pixels, 99.9, method="higher")) == (0, 975)
    expected = 1.0 - np.clip(pixels.astype(np.float64) / 975, 0, 1)
    np.testing.assert_allclose(image.numpy()[0], expected, atol=1e-6)
    assert image.meta["pixel_spacing"] == [0.2, 0.25]
    assert image.meta["view"] == "PA"
    assert out["id"] == "a"


def test_a_path_instead_of_a_dict_is_named(tmp_path):
    """A path failed with "dictionary update sequence element #0 has length 1; 2 is required"."""
    path = save(make_cr(), tmp_path / "a.dcm")
    with pytest.raises(TypeError, match=r"LoadCXRDicomd takes a dict such as \{'image': path\}, got str; .*load_cxr_dicom"):
        LoadCXRDicomd(keys="image")(str(path))


def test_bad_voi_rejected_at_construction():
    with pytest.raises(ValueError, match="voi must be one of"):
        LoadCXRDicomd(keys="image", voi="soft")


def test_voi_and_intensity_sign_options_reach_the_loader(tmp_path):
    """A window and Pixel Intensity Relationship Sign +1 are applied by default and left alone
    with ``voi="none"`` and ``use_intensity_sign=False``."""
    pixels = np.array([[0, 100, 200, 300]], dtype=np.uint16)
    path = save(make_cr(pixels, WindowCenter="100", WindowWidth="101", PixelIntensityRelationshipSign=1), tmp_path / "a.dcm")
    default = LoadCXRDicomd(keys="image")({"image": str(path)})["image"]
    assert default.meta["voi"] == "window 100/101" and default.meta["inverted_for_intensity_sign"] is True
    plain = LoadCXRDicomd(keys="image", voi="none", use_intensity_sign=False)({"image": str(path)})["image"]
    assert plain.meta["voi"] == "minmax" and plain.meta["inverted_for_intensity_sign"] is False
    np.testing.assert_allclose(plain.numpy()[0, 0], pixels[0] / 300, atol=1e-6)


def test_pipeline_resizes_like_the_png_pipeline(tmp_path):
    """Values 0..255 (each 16 times, so min-max is /255) as a DICOM with a window that ``voi="none"``
    must ignore, and as an 8-bit PNG: both pipelines give the same tensor (area resize, no meta)."""
    pixels = (np.arange(64 * 64) % 256).reshape(64, 64)
    dicom = save(make_cr(pixels.astype(np.uint16), WindowCenter="20", WindowWidth="40"), tmp_path / "a.dcm")
    png = tmp_path / "a.png"
    Image.fromarray(pixels.astype(np.uint8)).save(png)
    from_dicom = Compose(dicom_image_transforms(("image",), size=32, voi="none"))({"image": str(dicom)})["image"]
    from_png = Compose(load_image_transforms(("image",), size=32))({"image": str(png)})["image"]
    assert type(from_dicom) is type(from_png) is torch.Tensor
    assert from_dicom.shape == (1, 32, 32) and from_dicom.dtype == torch.float32
    assert 0.0 <= float(from_dicom.min()) and float(from_dicom.max()) <= 1.0
    np.testing.assert_allclose(from_dicom.numpy(), from_png.numpy(), atol=1e-6)
