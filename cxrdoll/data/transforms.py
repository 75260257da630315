"""The one image-loading pipeline every stage uses, so pixels line up across stages."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Resized,
    ScaleIntensityRanged,
)


def load_image_transforms(keys: Sequence[str] = ("image",), size: int = 320) -> list:
    """Load 8-bit greyscale PNG/JPEG into float32 ``(1, size, size)`` in [0, 1].

    ``reverse_indexing=False`` keeps numpy's (row, column) order, unlike MONAI's PIL default,
    so that saved masks and label files index the same pixels as the source image.
    """
    keys = list(keys)
    return [
        LoadImaged(keys=keys, reader="PILReader", reverse_indexing=False, image_only=True, converter=_to_grey),
        EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
        ScaleIntensityRanged(keys=keys, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        Resized(keys=keys, spatial_size=(size, size), mode="area"),
        EnsureTyped(keys=keys, dtype="float32", track_meta=False),
    ]


TWELVE_BIT_MAX = 4095
# Bumped whenever the pixels a file loads as change (16-bit PNG scaling: 2), so caches rebuild.
PIXEL_RULES_VERSION = 2


def unit_range(array: np.ndarray) -> np.ndarray:
    """Greyscale pixels as float32 in [0, 1], one rule for every stage.

    8-bit: /255; floats and booleans already in [0, 1] as they are; other integers: /4095 when
    their maximum is above 255 and fits 12 bits (12-bit detectors stored in 16), else min-max
    scaled (as are other floats): values all within 0..255 in a wider type are 8-bit data, which
    /4095 would leave near black.
    """
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    unit_kind = array.dtype == bool or np.issubdtype(array.dtype, np.floating)
    array = array.astype(np.float32)
    lo, hi = float(array.min()), float(array.max())
    if unit_kind and lo >= 0 and hi <= 1:
        return array
    if lo >= 0 and 255 < hi <= TWELVE_BIT_MAX:
        return array / TWELVE_BIT_MAX
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)


def _to_grey(image):
    """PIL converter: every input becomes single-channel 8-bit ('L').

    16-bit and float images are scaled by ``unit_range`` first: PIL's own conversion clips them
    at 255, which turns a 16-bit radiograph white.
    """
    if image.mode == "L":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        from PIL import Image

        return Image.fromarray(np.rint(unit_range(np.asarray(image)) * 255.0).astype(np.uint8), "L")
    return image.convert("L")


def load_image_pipeline(size: int = 320) -> Compose:
    return Compose(load_image_transforms(("image",), size))
