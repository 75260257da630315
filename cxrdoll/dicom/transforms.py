"""MONAI transforms that bring DICOM into the same convention as ``load_image_transforms``."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import EnsureTyped, MapTransform, Resized

from cxrdoll.dicom.loader import VOI_MODES, load_cxr_dicom


class LoadCXRDicomd(MapTransform):
    """Replace each key's DICOM path by a float32 ``(1, H, W)`` MetaTensor in [0, 1].

    The loader's metadata (pixel spacing in mm, view, VOI used, original shape) travels in the
    MetaTensor's ``meta``; usable as the first transform of any bundle's preprocessing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        voi: str = "auto",
        use_intensity_sign: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if voi not in VOI_MODES:
            raise ValueError(f"voi must be one of {VOI_MODES}, got {voi!r}")
        self.voi = voi
        self.use_intensity_sign = use_intensity_sign

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        if not isinstance(data, Mapping):  # dict(path) failed with "dictionary update sequence element #0 ..."
            raise TypeError(f"LoadCXRDicomd takes a dict such as {{{self.keys[0]!r}: path}}, got {type(data).__name__}; "
                            "for one path use cxrdoll.dicom.load_cxr_dicom(path)")
        d = dict(data)
        for key in self.key_iterator(d):
            image = load_cxr_dicom(str(d[key]), voi=self.voi, use_intensity_sign=self.use_intensity_sign)
            d[key] = MetaTensor(image.array, meta=image.meta)
        return d


def dicom_image_transforms(keys: Sequence[str] = ("image",), size: int = 320, voi: str = "auto") -> list:
    """DICOM counterpart of ``cxrdoll.data.transforms.load_image_transforms``: ``(1, size, size)``."""
    keys = list(keys)
    return [
        LoadCXRDicomd(keys=keys, voi=voi),
        Resized(keys=keys, spatial_size=(size, size), mode="area"),
        EnsureTyped(keys=keys, dtype="float32", track_meta=False),
    ]
