"""MONAI Deploy app: chest CR/DX DICOM in, DICOM SEG + overlay PNG out, using a segmentation bundle.

Run (the SDK needs a larger stack than the default):
    ulimit -s 32768
    python deploy/cxr_seg_app/app.py -i DICOM_DIR -o OUT_DIR -m BUNDLE_DIR

``-m`` is the bundle folder (e.g. ``bundles/cxr_seg_adapter``); see docs/FORMATS.md,
"Deployable segmentation bundle". Environment: CXR_DEVICE (default cpu), CXR_THRESHOLD (0.5).
"""

from __future__ import annotations

import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

from cxrdoll.deploy.operators import (
    CXR_SELECTION_RULES,
    CXRImageOperator,
    CXRSegInferenceOperator,
    CXRSegWriterOperator,
)


class CXRSegApp(Application):
    """DICOMDataLoader -> series selector (CR|DX) -> to-image -> bundle inference -> SEG + overlay."""

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        output = Path(context.output_path)
        output.mkdir(parents=True, exist_ok=True)
        loader = DICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=Path(context.input_path), name="dicom_loader"
        )
        selector = DICOMSeriesSelectorOperator(self, rules=CXR_SELECTION_RULES, all_matched=True, name="cxr_selector")
        to_image = CXRImageOperator(self, name="to_image")
        inference = CXRSegInferenceOperator(
            self,
            bundle_path=context.model_path,
            device=os.environ.get("CXR_DEVICE", "cpu"),
            threshold=float(os.environ.get("CXR_THRESHOLD", "0.5")),
            name="bundle_inference",
        )
        writer = CXRSegWriterOperator(self, output_folder=output, name="seg_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_image, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_image, inference, {("cases", "cases")})
        self.add_flow(inference, writer, {("segmented", "segmented")})


if __name__ == "__main__":
    CXRSegApp().run()
