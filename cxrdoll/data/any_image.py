"""One loader for PNG/JPEG and DICOM paths, so a datalist may mix them."""

from __future__ import annotations

from typing import Any, Hashable, Mapping

from monai.transforms import Compose, Transform

from cxrdoll.data.transforms import load_image_transforms

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")


class LoadAnyImaged(Transform):
    """Load ``image`` as ``(1, size, size)`` float32 in [0, 1]: DICOM through ``cxrdoll.dicom``, else PIL.

    Both follow the same pixel convention (docs/FORMATS.md), so a datalist may mix PNG/JPEG and DICOM.
    """

    def __init__(self, size: int, key: str = "image") -> None:
        from cxrdoll.dicom.transforms import dicom_image_transforms

        self.key = key
        self.pil = Compose(load_image_transforms((key,), size))
        self.dicom = Compose(dicom_image_transforms((key,), size))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        is_dicom = str(data[self.key]).lower().endswith(DICOM_SUFFIXES)
        return (self.dicom if is_dicom else self.pil)(dict(data))
