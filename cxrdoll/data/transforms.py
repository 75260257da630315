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

from cxrdoll.data.pixels import robust_minmax, robust_range


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
# Bumped whenever the pixels a file loads as change, so caches rebuild: 2, 16-bit PNG scaling;
# 3, percentile range (a few extreme pixels no longer set the scale).
PIXEL_RULES_VERSION = 3


def unit_range(array: np.ndarray) -> np.ndarray:
    """Greyscale pixels as float32 in [0, 1], one rule for every stage.

    8-bit: /255. Floats and booleans already in [0, 1]: as they are. Anything else (integers wider
    than 8 bits, other floats) is scaled on its robust range ``(lo, hi) = robust_range(array)``,
    the 0.1st and 99.9th percentiles (rank floor(0.001 (n-1)) and ceil(0.999 (n-1))):

    - ``lo >= 0`` and ``255 < hi <= 4095``: 12-bit detector data stored in 16, ``array / 4095``;
    - else ``(array - lo) / (hi - lo)`` (min-max on the percentiles; values 0..255 in a wider
      type are 8-bit data, which /4095 would leave near black); plain min-max when ``hi == lo``
      (an almost constant image); all zeros when the image is constant;

    then clipped to [0, 1]. Up to 0.1 % of the pixels at each end (hot or dead pixels, a burned-in
    marker at 65535) are clipped rather than deciding the scale of the rest.

    ``array``: numpy, or anything ``np.asarray`` reads (a CPU torch tensor, whose dtype numpy could
    not interpret); the result is numpy.
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    unit_kind = array.dtype == bool or np.issubdtype(array.dtype, np.floating)
    if unit_kind and array.size and float(array.min()) >= 0 and float(array.max()) <= 1:  # NaN fails this
        return array.astype(np.float32)
    lo, hi = robust_range(array)  # refuses an empty image and NaN or infinite pixels
    array = array.astype(np.float32)
    if lo >= 0 and 255 < hi <= TWELVE_BIT_MAX:
        return np.clip(array / TWELVE_BIT_MAX, 0.0, 1.0)
    return robust_minmax(array, lo, hi)


# PNG colour types with more than one sample per pixel (IHDR byte 25): 2 RGB, 4 grey+alpha, 6 RGBA.
_PNG_MULTI_SAMPLE = {2: "RGB", 4: "grey+alpha", 6: "RGBA"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header(image) -> tuple[int, int] | None:
    """(bit depth, colour type) from the IHDR of the PNG file PIL ``image`` was opened from, else None."""
    if getattr(image, "format", None) != "PNG":
        return None
    head = b""
    filename = getattr(image, "filename", None)
    if filename:
        with open(filename, "rb") as f:
            head = f.read(26)
    else:
        fp = getattr(image, "fp", None)
        if fp is not None and hasattr(fp, "seek"):
            position = fp.tell()
            try:
                fp.seek(0)
                head = fp.read(26)
            finally:
                fp.seek(position)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def refuse_16_bit_colour_png(image) -> None:
    """ValueError naming the file for a 16-bit RGB, RGBA or grey+alpha PNG.

    Pillow opens those as 8-bit modes and keeps only the high byte of each sample, so 12-bit data
    would load near black.
    """
    header = png_header(image)
    if header is not None and header[0] == 16 and header[1] in _PNG_MULTI_SAMPLE:
        name = getattr(image, "filename", None) or "PNG"
        raise ValueError(
            f"{name}: 16-bit {_PNG_MULTI_SAMPLE[header[1]]} PNG, which Pillow reads as 8-bit (keeping "
            "only the high byte of each sample); convert it to single-channel 16-bit greyscale"
        )


def _to_grey(image):
    """PIL converter: every input becomes single-channel 8-bit ('L').

    16-bit and float images are scaled by ``unit_range`` first: PIL's own conversion clips them
    at 255, which turns a 16-bit radiograph white. A 16-bit colour or grey+alpha PNG is refused
    (``refuse_16_bit_colour_png``): Pillow would drop its low byte.
    """
    if image.mode == "L":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        from PIL import Image

        return Image.fromarray(np.rint(unit_range(np.asarray(image)) * 255.0).astype(np.uint8), "L")
    refuse_16_bit_colour_png(image)
    return image.convert("L")


def load_image_pipeline(size: int = 320) -> Compose:
    return Compose(load_image_transforms(("image",), size))
