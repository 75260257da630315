"""Clinical DICOM in and out: CR/DX loading (also as a MONAI transform), ingestion, and DICOM SEG writing."""

from cxrdoll.dicom.loader import CXRImage, DicomInputError, dataset_to_image, load_cxr_dicom, read_dataset
from cxrdoll.dicom.views import rank_frontal, view_position

__all__ = [
    "CXRImage",
    "DicomInputError",
    "dataset_to_image",
    "load_cxr_dicom",
    "read_dataset",
    "rank_frontal",
    "view_position",
]
