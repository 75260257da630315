"""The one image-loading pipeline every stage uses, so pixels line up across stages."""

from __future__ import annotations

from typing import Sequence

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


def _to_grey(image):
    """PIL converter: every input becomes single-channel 8-bit ('L')."""
    return image if image.mode == "L" else image.convert("L")


def load_image_pipeline(size: int = 320) -> Compose:
    return Compose(load_image_transforms(("image",), size))
