"""One loader for PNG/JPEG and DICOM paths, so a datalist may mix them."""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import torch
from monai.transforms import Compose, Transform

from cxrdoll.data.transforms import load_image_transforms, refuse_16_bit_colour_png
from cxrdoll.errors import about_file, user_error

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
# raster and NIfTI files (``cxrdoll.data.segmentation.read_array``): segmentation masks may be any of these
MASK_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".img", ".nii", ".nii.gz")
# every image file cxrdoll reads, any case; ``.nii`` never matches a ``.nii.gz`` name, so order does not matter
IMAGE_FILE_SUFFIXES: tuple[str, ...] = (*MASK_SUFFIXES, *DICOM_SUFFIXES)


class LoadAnyImaged(Transform):
    """Load ``image`` as ``(1, size, size)`` float32 in [0, 1]: DICOM through ``cxrdoll.dicom``, else PIL.

    Both follow the same pixel convention (docs/FORMATS.md), so a datalist may mix PNG/JPEG and DICOM.
    """

    def __init__(self, size: int, key: str = "image") -> None:
        from cxrdoll.dicom.transforms import dicom_image_transforms

        self.key = key
        self.size = size
        self.pil = Compose(load_image_transforms((key,), size))
        self.dicom = Compose(dicom_image_transforms((key,), size))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """The loaded item; an unreadable file is a ValueError naming it and saying why."""
        path = str(data[self.key])
        is_dicom = path.lower().endswith(DICOM_SUFFIXES)
        try:
            return (self.dicom if is_dicom else self.pil)(dict(data))
        except RuntimeError as err:  # MONAI wraps the loader's reason in RuntimeErrors
            reason = user_error(err) or (None if is_dicom else pil_error(path))
            if reason is None:  # the file reads fine: a bug, not the user's file
                raise
            raise ValueError(about_file(path, reason)) from err

    def placeholder(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """A black image of the loaded shape in place of an unreadable one (``cxrdoll.data.unreadable``)."""
        return {**data, self.key: torch.zeros(1, self.size, self.size)}


def pil_error(path: str) -> Exception | None:
    """PIL's own error on opening ``path``, or None if it decodes: for a file no reader can open,
    MONAI's message lists every reader it tried instead of saying what is wrong. A PNG the pipeline
    refuses though PIL decodes it (``refuse_16_bit_colour_png``) gives that ValueError."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            refuse_16_bit_colour_png(image)
            image.load()
    except Exception as err:  # PIL raises many types for a bad file; the file is what is wrong
        return err
    return None
