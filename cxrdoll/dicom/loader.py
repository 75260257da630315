"""Chest CR/DX DICOM to the project's image convention: float32 ``(1, H, W)`` in [0, 1].

The display pipeline follows DICOM PS3.4 (modality LUT, then VOI, then presentation) so that a
MONOCHROME1 radiograph and its MONOCHROME2 twin give the same array: lungs dark, bone bright.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.uid import SegmentationStorage

from cxrdoll.data.pixels import robust_minmax, robust_range
from cxrdoll.dicom.views import view_position

CXR_MODALITIES: tuple[str, ...] = ("CR", "DX")
# "auto": VOI LUT Sequence, else a usable window, else min-max; the others force one method.
VOI_MODES: tuple[str, ...] = ("auto", "lut", "window", "none")
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"  # Digital X-Ray Image Storage - For Processing
# A window leaving fewer pixels than this fraction unclipped says nothing about the image
# (e.g. GDCM DX_J2K_0Padding: window 2725/5310 on values 32744..65535); "auto" then uses min-max.
MIN_UNCLIPPED_FRACTION = 0.01


class DicomInputError(ValueError):
    """A file that is not a usable chest radiograph; the message names the file and the problem."""

    def __init__(self, source: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = str(source)
        self.problem = problem


@dataclass
class CXRImage:
    """A decoded radiograph in the project's convention plus what later stages need to know."""

    array: np.ndarray  # float32 (1, H, W) in [0, 1], numpy (row, column) order
    meta: dict[str, Any] = field(default_factory=dict)


def read_dataset(path: str | os.PathLike) -> Dataset:
    """Read a DICOM file, also one without preamble or File Meta (``force=True``)."""
    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, struct.error) as err:
        raise DicomInputError(path, f"not a readable DICOM file ({type(err).__name__}: {err})") from None
    if not any(keyword in ds for keyword in ("SOPClassUID", "Modality", "PixelData")):
        # force=True "reads" any bytes; real DICOM has at least one of these.
        raise DicomInputError(path, "not a DICOM file (no SOP Class UID, Modality or Pixel Data)")
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        # No File Meta: name the uncompressed encoding pydicom detected, so the pixels can decode.
        implicit, little = ds.original_encoding
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if implicit
            else pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        )
    return ds


def check_cxr(ds: Dataset, source: str) -> None:
    """Raise :class:`DicomInputError` unless ``ds`` is a single-frame greyscale CR/DX image for presentation."""
    if ds.get("SOPClassUID") == SegmentationStorage or ds.get("Modality") == "SEG":
        raise DicomInputError(source, "is a DICOM SEG object, not a radiograph")
    modality = str(ds.get("Modality", "") or "")
    if modality not in CXR_MODALITIES:
        raise DicomInputError(source, f"modality {modality or '(missing)'!r} is not CR or DX")
    if ds.get("SOPClassUID") == DX_FOR_PROCESSING or str(ds.get("PresentationIntentType", "")).upper() == "FOR PROCESSING":
        raise DicomInputError(source, "is a 'For Processing' image (detector data not meant for display); "
                                      "expected 'For Presentation'")
    if "PixelData" not in ds:
        raise DicomInputError(source, "has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomInputError(
            source,
            f"is colour (PhotometricInterpretation {photometric or '(missing)'!r}, "
            f"SamplesPerPixel {ds.get('SamplesPerPixel')}); expected MONOCHROME1/2 greyscale"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DicomInputError(source, f"is multi-frame ({frames} frames); expected a single-frame radiograph")


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str]:
    """(row, column) spacing in mm and the attribute it came from; missing, zero or malformed
    values (one number, text that is not a number) are unknown."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            row, col = (float(v) for v in ds.get(keyword))
        except (TypeError, ValueError):  # absent (None), a single DS, or unparsable
            continue
        if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
            return (row, col), keyword
    return None, "none"


def dataset_to_image(
    ds: Dataset, voi: str = "auto", source: str = "<dataset>", use_intensity_sign: bool = True
) -> CXRImage:
    """Decode, apply rescale and VOI, and invert MONOCHROME1 into a float32 ``(1, H, W)`` image.

    With ``use_intensity_sign`` a file whose Pixel Intensity Relationship Sign says that its
    display would show bone dark (MONOCHROME2 with sign +1, MONOCHROME1 with sign -1) is flipped
    to the radiographic convention the networks are trained on.
    """
    if voi not in VOI_MODES:
        raise ValueError(f"voi must be one of {VOI_MODES}, got {voi!r}")
    check_cxr(ds, source)
    try:
        raw = pixel_array(ds)  # not ds.pixel_array, which keeps the decoded array on a dataset the caller may hold
    except Exception as err:  # decoders raise many types; the file is what is wrong
        raise DicomInputError(source, f"pixel data could not be decoded ({type(err).__name__}: {err})") from None
    # Header values of any shape reach these steps (short LUT Data, unparsable Rescale Slope): the
    # file is what is wrong, and batch jobs skip a DicomInputError instead of stopping.
    try:
        values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    except Exception as err:
        raise DicomInputError(source, f"modality LUT or rescale could not be applied ({type(err).__name__}: {err})") from None
    try:
        scaled, voi_used = _apply_voi(values, ds, voi, source)
    except DicomInputError:
        raise
    except Exception as err:
        raise DicomInputError(source, f"VOI could not be applied ({type(err).__name__}: {err})") from None
    _check_not_blank(values, scaled, voi_used, source)
    photometric = ds.PhotometricInterpretation
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    sign = ds.get("PixelIntensityRelationshipSign")
    flip_for_sign = use_intensity_sign and sign is not None and _displays_bone_dark(photometric, int(sign))
    if flip_for_sign:
        scaled = 1.0 - scaled
    spacing, spacing_source = pixel_spacing(ds)
    view, view_source = view_position(ds)
    meta = {
        "filename_or_obj": source,
        "modality": str(ds.Modality),
        "photometric": str(photometric),
        "view": view,
        "view_source": view_source,
        "pixel_spacing": list(spacing) if spacing else None,
        "pixel_spacing_source": spacing_source,
        "original_shape": [int(values.shape[0]), int(values.shape[1])],
        "voi": voi_used,
        "inverted_for_intensity_sign": bool(flip_for_sign),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
    }
    return CXRImage(np.ascontiguousarray(scaled[None], dtype=np.float32), meta)


def load_cxr_dicom(path: str | os.PathLike, voi: str = "auto", use_intensity_sign: bool = True) -> CXRImage:
    """Read and convert one file; every failure is a :class:`DicomInputError` naming ``path``."""
    return dataset_to_image(read_dataset(path), voi=voi, source=str(path), use_intensity_sign=use_intensity_sign)


def _check_not_blank(values: np.ndarray, scaled: np.ndarray, voi_used: str, source: str) -> None:
    """A blank image (a failed exposure or export, or a forced window that clips every pixel) is refused:
    it holds no anatomy to learn from, label or segment, and written out it would pass for a radiograph."""
    if values.size and values.min() == values.max():
        raise DicomInputError(source, f"every pixel has the value {values.flat[0]:g} after rescale: a blank image")
    if scaled.size and scaled.min() == scaled.max():
        raise DicomInputError(source, f"VOI ({voi_used}) maps every pixel to {scaled.flat[0]:g}: nothing is visible")


def _displays_bone_dark(photometric: str, sign: int) -> bool:
    """Sign +1: pixel value rises with beam intensity, so MONOCHROME2 shows lungs bright."""
    return (photometric == "MONOCHROME2" and sign == 1) or (photometric == "MONOCHROME1" and sign == -1)


def _apply_voi(values: np.ndarray, ds: Dataset, mode: str, source: str) -> tuple[np.ndarray, str]:
    has_lut = "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0
    window = _window(ds)
    if mode == "lut" or (mode == "auto" and has_lut):
        if not has_lut:
            raise DicomInputError(source, "voi='lut' but the file has no VOI LUT Sequence")
        return _apply_lut(values, ds, source), "lut"
    if mode == "window" or (mode == "auto" and window is not None):
        if window is None:
            raise DicomInputError(source, "voi='window' but the file has no usable Window Center/Width "
                                          "(missing, unparsable, or narrower than its VOI LUT Function allows)")
        out = _apply_window(values, *window)
        unclipped = float(np.mean((out > 0.0) & (out < 1.0)))
        label = f"window {window[0]:g}/{window[1]:g}"
        if mode == "window" or unclipped >= MIN_UNCLIPPED_FRACTION:
            return out, label
        return _minmax(values), f"minmax ({label} leaves {unclipped:.1%} of pixels unclipped)"
    return _minmax(values), "minmax"


def _window(ds: Dataset) -> tuple[float, float, str] | None:
    """(center, width, VOI LUT Function) of the first window, or None when there is no usable one:
    PS3.3 C.11.2.1.2 needs a width >= 1 for LINEAR and > 0 for LINEAR_EXACT and SIGMOID."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None
    center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
    width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in ("LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"  # PS3.3's default, also for a value it does not define
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0 or (function == "LINEAR" and width < 1):
        return None
    return center, width, function


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing onto [0, 1] (``_window`` has checked the width)."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _apply_lut(values: np.ndarray, ds: Dataset, source: str) -> np.ndarray:
    """First VOI LUT of the file, scaled by its output bit depth (LUT Descriptor, third value).

    The lookup is done here: pydicom 3.0's ``apply_voi`` indexes an 8-bit LUT with uint8 values, so
    inputs 256 and up wrap around to the wrong entries.
    """
    item = ds.VOILUTSequence[0]
    n_entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    n_entries = n_entries or 2**16  # PS3.3 C.11.2.1.1: 0 means 65536
    if not 8 <= bits <= 16:
        raise DicomInputError(source, f"VOI LUT Descriptor gives {bits} bits per entry; PS3.3 allows 8 to 16")
    entries = _lut_entries(item["LUTData"].value, ds)
    if entries.size < n_entries:
        raise DicomInputError(source, f"VOI LUT Data holds {entries.size} entries, its LUT Descriptor says {n_entries}")
    index = np.clip(np.rint(values).astype(np.int64) - first_mapped, 0, n_entries - 1)
    return np.clip(entries[index] / (2**bits - 1), 0.0, 1.0)


def _lut_entries(data: Any, ds: Dataset) -> np.ndarray:
    """LUT Data as float64: OW bytes are 16-bit words in the dataset's byte order, US is a list."""
    if isinstance(data, (bytes, bytearray)):
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        little = syntax.is_little_endian if syntax is not None else ds.original_encoding[1] is not False
        return np.frombuffer(data, dtype="<u2" if little else ">u2").astype(np.float64)
    return np.atleast_1d(np.asarray(data, dtype=np.float64))


def _minmax(values: np.ndarray) -> np.ndarray:
    """Min-max between the 0.1st and 99.9th percentiles, clipped: as ``cxrdoll.data.transforms.unit_range``,
    a few hot pixels or a burned-in marker at full scale do not decide the scale (plain min-max when
    those percentiles coincide)."""
    return robust_minmax(values, *robust_range(values))
