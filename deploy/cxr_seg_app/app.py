"""MONAI Deploy app: chest CR/DX DICOM in, DICOM SEG + overlay PNG out, using a segmentation bundle.

Run (the SDK needs a larger stack than the default):
    ulimit -s 32768
    python deploy/cxr_seg_app/app.py -i DICOM_DIR -o OUT_DIR -m BUNDLE_DIR

``-m`` is the bundle folder (e.g. ``bundles/cxr_seg_adapter``); see docs/FORMATS.md, "DICOM SEG
output and the deployable segmentation bundle". Environment: CXR_DEVICE (cpu, cuda or cuda:N;
default cpu), CXR_THRESHOLD (in (0, 1); default 0.5). ``OUT_DIR/report.csv`` says what became of each input file.

Exit codes: 0 at least one SEG written (skipped files are in the report), 1 none written (the
report says why), 2 a bad input folder, output folder, bundle or setting (one line on stderr;
nothing run, OUT_DIR unchanged), or an output that could not be written (a full disk, a read-only
folder: one line naming it and the cause; the batch stops there, the SEGs written before it stay,
no report is written, and no SEG is left without its overlay), 3 an unexpected error (a bug: its
traceback on stderr).
"""

from __future__ import annotations

import sys
import traceback
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
from cxrdoll.deploy.report import REPORT_NAME, RunReport
from cxrdoll.deploy.settings import check_input_folder, settings_from_env
from cxrdoll.errors import one_line, user_error


class CXRSegApp(Application):
    """DICOMDataLoader -> series selector (CR|DX) -> to-image -> bundle inference -> SEG + overlay."""

    report: RunReport
    report_path: Path

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        input_folder = check_input_folder(context.input_path)  # folders and settings before the model loads
        output = Path(context.output_path)
        if output.resolve().is_relative_to(input_folder.resolve()):
            raise ValueError(f"{output}: output folder inside the input folder {input_folder}; "
                             "its SEGs would be read as input by the next run")
        settings = settings_from_env()
        self.report = RunReport(input_folder)
        inference = CXRSegInferenceOperator(
            self, bundle_path=context.model_path, report=self.report, device=settings.device,
            threshold=settings.threshold, name="bundle_inference",
        )
        output.mkdir(parents=True, exist_ok=True)
        self.report_path = output / REPORT_NAME
        # must_load=False: a folder without a loadable study gives an empty list and a report, not a traceback.
        loader = DICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=input_folder, must_load=False, name="dicom_loader"
        )
        selector = DICOMSeriesSelectorOperator(self, rules=CXR_SELECTION_RULES, all_matched=True, name="cxr_selector")
        to_image = CXRImageOperator(self, report=self.report, name="to_image")
        writer = CXRSegWriterOperator(self, output_folder=output, report=self.report, name="seg_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_image, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_image, inference, {("cases", "cases")})
        self.add_flow(inference, writer, {("segmented", "segmented")})


def main() -> int:
    """Run the app and write the report; the exit code says whether anything was written (module docstring)."""
    app = CXRSegApp()
    try:
        app.run()
    except Exception as err:  # bad input or settings: one line, exit code 2; bugs keep their traceback
        cause = user_error(err)
        if cause is None:
            traceback.print_exc()
            return 3
        print(f"error: {one_line(cause)}", file=sys.stderr)
        return 2
    try:
        rows = app.report.write(app.report_path)
    except OSError as err:  # a full disk: OutputWriteError names the report
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    written = app.report.written
    summary = f"{written} SEG(s) written; {len(rows) - written} of {len(rows)} files skipped; report: {app.report_path}"
    if not written:
        print(f"error: nothing written: {summary}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
