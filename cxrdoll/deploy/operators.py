"""MONAI Deploy operators for the CXR segmentation app (needs ``requirements-deploy.txt``).

Chain: DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator (CR|DX) -> :class:`CXRImageOperator`
-> :class:`CXRSegInferenceOperator` -> :class:`CXRSegWriterOperator` (DICOM SEG + overlay PNG).

:class:`CXRImageOperator` replaces the SDK's DICOMSeriesToVolumeOperator: that one turns a
single-frame CR/DX into a depth-1 volume with rescale only, whereas the project's loader gives the
2-D ``(1, H, W)`` image directly, with VOI and MONOCHROME1 handled exactly as in training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom.dataset import Dataset

from cxrdoll.deploy.overlay import save_overlay
from cxrdoll.deploy.seg_bundle import SegBundle
from cxrdoll.dicom.loader import CXRImage, DicomInputError, dataset_to_image
from cxrdoll.dicom.seg import write_seg
from cxrdoll.dicom.views import select_frontal

# DICOMSeriesSelectorOperator rules: every CR or DX series of every study.
CXR_SELECTION_RULES = '{"selections": [{"name": "CXR", "conditions": {"Modality": "(?i)^(CR|DX)$"}}]}'

logger = logging.getLogger(__name__)


@dataclass
class CXRCase:
    """One frontal radiograph travelling down the chain; ``masks`` is filled by inference."""

    source: Dataset
    image: CXRImage
    masks: np.ndarray | None = None
    names: list[str] | None = None


class CXRImageOperator(Operator):
    """Selected series -> list of :class:`CXRCase`: the best frontal image of each series, decoded."""

    def __init__(self, fragment: Fragment, *args, voi: str = "auto", **kwargs) -> None:
        self.voi = voi
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("cases")

    def compute(self, op_input, op_output, context) -> None:
        cases = []
        for study_selected in op_input.receive("study_selected_series_list") or []:
            for selected in study_selected.selected_series:
                datasets = [sop.get_native_sop_instance() for sop in selected.series.get_sop_instances()]
                index = select_frontal(datasets)
                uid = selected.series.SeriesInstanceUID
                if index is None:
                    logger.warning("series %s: no frontal image (only lateral or other views); skipped", uid)
                    continue
                try:
                    image = dataset_to_image(datasets[index], voi=self.voi, source=f"series {uid}")
                except DicomInputError as err:
                    logger.warning("%s; skipped", err)
                    continue
                cases.append(CXRCase(datasets[index], image))
        op_output.emit(cases, "cases")


class CXRSegInferenceOperator(Operator):
    """Runs the segmentation bundle at ``bundle_path`` on every case (masks at source resolution)."""

    def __init__(
        self, fragment: Fragment, *args, bundle_path: str | Path, device: str = "cpu", threshold: float = 0.5, **kwargs
    ) -> None:
        self.bundle = SegBundle.load(bundle_path, device=device)
        self.threshold = threshold
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("cases")
        spec.output("segmented")

    def compute(self, op_input, op_output, context) -> None:
        cases = op_input.receive("cases")
        for case in cases:
            case.masks = self.bundle.predict(case.image.array, threshold=self.threshold)
            case.names = self.bundle.channel_names
        op_output.emit(cases, "segmented")


class CXRSegWriterOperator(Operator):
    """Writes ``<SOP Instance UID>_seg.dcm`` and ``<SOP Instance UID>_overlay.png`` per case."""

    def __init__(self, fragment: Fragment, *args, output_folder: str | Path, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("segmented")

    def compute(self, op_input, op_output, context) -> None:
        for case in op_input.receive("segmented"):
            stem = str(case.source.SOPInstanceUID)
            write_seg(self.output_folder / f"{stem}_seg.dcm", case.source, case.masks, case.names)
            save_overlay(self.output_folder / f"{stem}_overlay.png", case.image.array[0], case.masks)
            logger.info("wrote SEG and overlay for %s (%d segments)", stem, len(case.names))
