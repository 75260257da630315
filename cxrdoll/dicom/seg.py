"""Binary DICOM SEG for single-frame CR/DX radiographs, via highdicom.

Radiographs have no Frame of Reference and often no usable spacing (absent, or 0\\0), so the
Pixel Measures are given explicitly: the source's spacing, else 1 mm, plus a slice thickness,
because a SEG whose Pixel Measures lack SliceThickness does not read back (highdicom 0.28's
``segread`` raises "Sequence does not have the required attributes for a Pixel Measures Sequence").
"""

from __future__ import annotations

import os
from typing import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import validate_value

import cxrdoll
from cxrdoll.dicom.loader import pixel_spacing
from cxrdoll.dicom.seg_codes import segment_meaning
from cxrdoll.errors import writing
from cxrdoll.io import atomic_path

# Nominal thickness of a projection image: required by the SEG reader, meaningless for X-ray.
NOMINAL_SLICE_THICKNESS_MM = 1.0
DEFAULT_SERIES_NUMBER = 900
_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
# Type 2 attributes highdicom copies from the source into the SEG: present, possibly empty.
_TYPE2_COPIED = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)


def segment_descriptions(
    names: Sequence[str], algorithm_name: str = "cxrdoll", algorithm_version: str = cxrdoll.__version__
) -> list[hd.seg.SegmentDescription]:
    """One automatic-algorithm segment per name, numbered from 1, coded by :func:`segment_meaning`."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=algorithm_version, family=codes.DCM.ArtificialIntelligence
    )
    out = []
    for number, name in enumerate(names, start=1):
        meaning = segment_meaning(name)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=meaning.category,
            segmented_property_type=meaning.type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        if meaning.laterality is not None:
            # The modifier belongs inside the property type item (PS3.3 C.8.20.2, Table 10-7).
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept.from_code(meaning.laterality)
            ]
        out.append(description)
    return out


def build_seg(
    source: Dataset,
    masks: np.ndarray,
    names: Sequence[str],
    *,
    series_number: int = DEFAULT_SERIES_NUMBER,
    algorithm_name: str = "cxrdoll",
    manufacturer: str = "cxrdoll",
) -> hd.seg.Segmentation:
    """BINARY SEG of ``masks`` (N, H, W), one segment per name, referencing ``source``.

    ``source`` is the source image's pydicom Dataset (``cxrdoll.dicom.read_dataset(path)``).
    ``masks``: bool, integers (non-zero = inside) or floats holding only 0 and 1; probabilities are
    refused (threshold them first), since every pixel that is not exactly 0 would be written as inside.
    """
    if not isinstance(source, Dataset):
        raise TypeError(f"source must be the source image's pydicom Dataset (cxrdoll.dicom.read_dataset(path)), "
                        f"got {type(source).__name__}")
    if isinstance(names, str):
        raise TypeError(f"names must be a list of segment names, got the string {names!r} (one segment: [{names!r}])")
    masks = np.asarray(masks)
    if masks.dtype.kind in "fc" and not ((masks == 0) | (masks == 1)).all():
        finite = masks[np.isfinite(masks)]
        span = f"[{finite.min():.3g}, {finite.max():.3g}]" if finite.size else "no finite values"
        raise ValueError(f"masks are {masks.dtype} with values other than 0 and 1 ({span}); a SEG is binary and "
                         "every non-zero pixel would be written as inside: threshold probabilities first "
                         "(e.g. probs > 0.5)")
    if masks.ndim != 3 or masks.shape[0] != len(names):
        raise ValueError(f"masks must be (N, H, W) with N = {len(names)} segment names, got shape {masks.shape}")
    if masks.shape[1:] != (source.Rows, source.Columns):
        raise ValueError(f"mask size {masks.shape[1:]} differs from the source image ({source.Rows}, {source.Columns})")
    spacing, _ = pixel_spacing(source)
    reference = _seg_ready_reference(source)
    # (frames=1, H, W, segments): highdicom's layout for a single source frame.
    pixel_array = np.moveaxis(masks.astype(bool), 0, -1)[None]
    seg = hd.seg.Segmentation(
        source_images=[reference],
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(names, algorithm_name),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=algorithm_name,
        software_versions=cxrdoll.__version__,
        device_serial_number="0",
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=list(spacing or (1.0, 1.0)), slice_thickness=NOMINAL_SLICE_THICKNESS_MM
        ),
        omit_empty_frames=False,
    )
    # Type 2C in General Image when there is no Image Orientation/Position: a radiograph's case.
    seg.PatientOrientation = reference.get("PatientOrientation") or ""
    return seg


def _seg_ready_reference(source: Dataset) -> Dataset:
    """Header-only copy of ``source`` whose copied patient/study attributes are valid DICOM.

    Clinical files often carry values that break their VR (e.g. Patient's Age "62" instead of
    "062Y", or Cyrillic text without Specific Character Set); copied verbatim they would make the
    SEG fail validation. Text outside the declared repertoire has those characters replaced by
    "?"; other invalid values are dropped (Type 2 ones emptied) rather than guessed.
    """
    reference = Dataset()
    reference.file_meta = getattr(source, "file_meta", pydicom.dataset.FileMetaDataset())
    default_repertoire = "SpecificCharacterSet" not in source
    for element in source:
        if element.keyword == "PixelData":
            continue
        if default_repertoire and element.VR in _TEXT_VRS and not element.is_empty:
            element = pydicom.DataElement(element.tag, element.VR, _ascii(element.value))
        if element.VR != "SQ" and not element.is_empty and not _valid(element):
            if element.keyword in _TYPE2_COPIED:
                reference[element.tag] = pydicom.DataElement(element.tag, element.VR, "")
            continue
        reference[element.tag] = element
    for keyword in _TYPE2_COPIED:
        if keyword not in reference:
            setattr(reference, keyword, "")
    if reference.get("PatientIdentityRemoved") == "YES" and not (
        "DeidentificationMethod" in reference or "DeidentificationMethodCodeSequence" in reference
    ):
        # Type 1C once identity is marked removed; the source did not say how.
        reference.DeidentificationMethod = "not stated in the source image"
    return reference


def _ascii(value: object) -> object:
    if isinstance(value, pydicom.multival.MultiValue):
        return [_ascii(v) for v in value]
    return str(value).encode("ascii", "replace").decode("ascii")


def _valid(element: pydicom.DataElement) -> bool:
    values = element.value if isinstance(element.value, pydicom.multival.MultiValue) else [element.value]
    try:
        for value in values:
            validate_value(element.VR, value, pydicom.config.RAISE)
    except ValueError:
        return False
    return True


def write_seg(
    path: str | os.PathLike, source: Dataset, masks: np.ndarray, names: Sequence[str], **options
) -> hd.seg.Segmentation:
    """Build the SEG and write it atomically to ``path``. An OSError while writing (a full disk) is an
    ``OutputWriteError`` naming ``path``; a problem of the source or masks is raised as it comes."""
    seg = build_seg(source, masks, names, **options)
    with writing(path), atomic_path(path) as tmp:
        seg.save_as(tmp)
    return seg
