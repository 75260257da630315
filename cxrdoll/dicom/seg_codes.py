"""Coded segment meanings for DICOM SEG: anatomy (SCR structures), COVID-19 infection, DoLL findings.

SNOMED CT codes are taken from pydicom's DICOM code dictionary (``codes.SCT``) where it has them;
the few taken from elsewhere are noted. Findings without an exact SNOMED CT concept use the
private coding scheme ``99CXRDOLL`` (DICOM PS3.3 8.1: "99" prefixes a local scheme), so no code is
claimed that does not mean what the segment holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99CXRDOLL"

ANATOMY = codes.SCT.AnatomicalStructure
ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure
FINDING = codes.SCT.Finding
PHYSICAL_OBJECT = codes.SCT.PhysicalObject


@dataclass(frozen=True)
class SegmentMeaning:
    """Category, type and optional laterality modifier of one segment."""

    category: Code
    type: Code
    laterality: Code | None = None


def _private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


_STRUCTURES: dict[str, SegmentMeaning] = {
    "lung": SegmentMeaning(ANATOMY, codes.SCT.Lung),
    "left lung": SegmentMeaning(ANATOMY, codes.SCT.Lung, codes.SCT.Left),
    "right lung": SegmentMeaning(ANATOMY, codes.SCT.Lung, codes.SCT.Right),
    "heart": SegmentMeaning(ANATOMY, codes.SCT.Heart),
    "clavicle": SegmentMeaning(ANATOMY, codes.SCT.Clavicle),
    "left clavicle": SegmentMeaning(ANATOMY, codes.SCT.Clavicle, codes.SCT.Left),
    "right clavicle": SegmentMeaning(ANATOMY, codes.SCT.Clavicle, codes.SCT.Right),
    # 840539006 "Disease caused by SARS-CoV-2" (SNOMED CT international release 2020).
    "infection": SegmentMeaning(ABNORMAL, Code("840539006", "SCT", "COVID-19")),
}

_OBSERVATIONS: dict[str, SegmentMeaning] = {
    "Enlarged Cardiomediastinum": SegmentMeaning(FINDING, _private("ECM", "Enlarged cardiomediastinum")),
    "Cardiomegaly": SegmentMeaning(FINDING, codes.SCT.Cardiomegaly),
    "Lung Opacity": SegmentMeaning(FINDING, _private("LOPAC", "Lung opacity")),
    "Lung Lesion": SegmentMeaning(FINDING, _private("LLES", "Lung lesion")),
    "Edema": SegmentMeaning(FINDING, codes.SCT.PulmonaryEdema),
    "Consolidation": SegmentMeaning(FINDING, _private("CONS", "Consolidation")),
    # 233604007 "Pneumonia" (SNOMED CT; not in pydicom's dictionary).
    "Pneumonia": SegmentMeaning(FINDING, Code("233604007", "SCT", "Pneumonia")),
    "Atelectasis": SegmentMeaning(FINDING, _private("ATEL", "Atelectasis")),
    "Pneumothorax": SegmentMeaning(FINDING, codes.SCT.Pneumothorax),
    "Pleural Effusion": SegmentMeaning(FINDING, codes.SCT.PleuralEffusion),
    "Pleural Other": SegmentMeaning(FINDING, _private("PLOTH", "Other pleural finding")),
    "Fracture": SegmentMeaning(FINDING, _private("FRACT", "Fracture")),
    "Support Devices": SegmentMeaning(PHYSICAL_OBJECT, _private("DEVICE", "Support device")),
}


def segment_meaning(name: str) -> SegmentMeaning:
    """Meaning of a segment named like an SCR structure (any case) or a CheXpert observation."""
    if name in _OBSERVATIONS:
        return _OBSERVATIONS[name]
    key = name.strip().lower().replace("_", " ")
    if key in _STRUCTURES:
        return _STRUCTURES[key]
    known = sorted(_STRUCTURES) + sorted(_OBSERVATIONS)
    raise KeyError(f"no DICOM code for segment {name!r}; known segments: {known}")
