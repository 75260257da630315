"""MONAI Deploy operators for the CXR segmentation app (needs ``requirements-deploy.txt``).

Chain: DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator (CR|DX) -> :class:`CXRImageOperator`
-> :class:`CXRSegInferenceOperator` -> :class:`CXRSegWriterOperator` (DICOM SEG + overlay PNG).

Every input file gets a row of ``report.csv`` (:mod:`cxrdoll.deploy.report`); a bad file or case is
logged, reported and skipped, and never stops the batch. An output that cannot be written (a full
disk, a read-only folder) does: ``OutputWriteError`` names it and the cause, and the app exits 2.
A series whose chosen image cannot be decoded or segmented falls back on its next frontal image;
one whose SEG cannot be written does not (the writer has no network to run again).

Cases stream: the image and inference operators emit generators, which the writer drains, so each
case is decoded, segmented and written before the next is decoded. Emitted as lists, every case's
image and masks were held at once: peak RSS 1.35 GB for 40 CRs of 1024 x 1024 (16 MB per file),
0.86 GB streamed (3 MB per file, most of it the SDK loader's datasets).

:class:`CXRImageOperator` replaces the SDK's DICOMSeriesToVolumeOperator: that one turns a
single-frame CR/DX into a depth-1 volume with rescale only, whereas the project's loader gives the
2-D ``(1, H, W)`` image directly, with VOI and MONOCHROME1 handled exactly as in training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom.dataset import Dataset
from pydicom.uid import UID

from cxrdoll.deploy.overlay import save_overlay
from cxrdoll.deploy.report import REPORT_NAME, RunReport
from cxrdoll.deploy.seg_bundle import SegBundle
from cxrdoll.dicom.loader import CXRImage, DicomInputError, dataset_to_image
from cxrdoll.dicom.seg import write_seg
from cxrdoll.dicom.views import rank_frontal, view_position
from cxrdoll.errors import OutputWriteError, about_file, writing

# DICOMSeriesSelectorOperator rules: every CR or DX series of every study.
CXR_SELECTION_RULES = '{"selections": [{"name": "CXR", "conditions": {"Modality": "(?i)^(CR|DX)$"}}]}'

logger = logging.getLogger(__name__)


@dataclass
class CXRCase:
    """One frontal radiograph travelling down the chain; ``masks`` is filled by inference.

    ``file`` names the source in the report and the log; ``uid`` is its checked SOP Instance UID,
    the only value that goes into output file names. ``alternatives``: the series' frontal images
    ranked after this one, not yet decoded, for inference to fall back on (with ``voi``).
    """

    file: str
    uid: str
    source: Dataset
    image: CXRImage
    masks: np.ndarray | None = None
    names: list[str] | None = None
    alternatives: list[Dataset] = field(default_factory=list)
    voi: str = "auto"


def checked_sop_uid(ds: Dataset, source: str) -> str:
    """The SOP Instance UID, which names the output files and is what the SEG references: a
    malformed one (e.g. ``1.2.3/../../escaped``) could write outside the output folder."""
    uid = UID(str(ds.get("SOPInstanceUID", "") or ""))
    if not uid.is_valid:
        raise DicomInputError(source, f"invalid SOP Instance UID {str(uid)!r} (expected at most 64 digits and dots)")
    return str(uid)


def _skip(report: RunReport, file: str, reason: str) -> None:
    logger.warning("%s; skipped", about_file(file, reason))
    report.skipped(file, reason)


def _reason(err: Exception) -> str:
    return err.problem if isinstance(err, DicomInputError) else f"{type(err).__name__}: {err}"


def first_usable_case(candidates: Sequence[Dataset], report: RunReport, voi: str) -> CXRCase | None:
    """The first of ``candidates`` (a series' frontal images, best first) that decodes with a usable UID.

    Those ranked after it travel with it as ``alternatives`` and are reported as not used, until
    inference falls back on one of them.
    """
    for rank, ds in enumerate(candidates):
        file = report.name(ds.filename)
        try:
            uid = checked_sop_uid(ds, file)
            case = CXRCase(file, uid, ds, dataset_to_image(ds, voi=voi, source=file),
                           alternatives=list(candidates[rank + 1:]), voi=voi)
        except Exception as err:  # one bad file must not stop the batch: the next image is tried
            _skip(report, file, _reason(err))
            continue
        for other in case.alternatives:
            report.skipped(report.name(other.filename), f"not used: {file} was chosen for its series")
        return case
    return None


class CXRImageOperator(Operator):
    """Selected series -> :class:`CXRCase` per series, as a generator: the best frontal image that decodes."""

    def __init__(self, fragment: Fragment, *args, report: RunReport, voi: str = "auto", **kwargs) -> None:
        self.report = report
        self.voi = voi
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("cases")

    def compute(self, op_input, op_output, context) -> None:
        op_output.emit(self._cases(op_input.receive("study_selected_series_list") or []), "cases")

    def _cases(self, studies: Iterable) -> Iterator[CXRCase]:
        """One case per series, decoded when the next operator asks for it (module docstring)."""
        for study_selected in studies:
            for selected in study_selected.selected_series:
                case = self._series_case([sop.get_native_sop_instance() for sop in selected.series.get_sop_instances()])
                if case is None:
                    uid = selected.series.SeriesInstanceUID
                    logger.warning("series %s: no usable frontal image (reasons per file in %s)", uid, REPORT_NAME)
                else:
                    yield case

    def _series_case(self, datasets: Sequence[Dataset]) -> CXRCase | None:
        """The first frontal image that decodes, best view first; every file of the series gets its report row."""
        frontal, others = rank_frontal(datasets)
        case = first_usable_case(frontal, self.report, self.voi)
        for ds in others:
            view, evidence = view_position(ds)
            self.report.skipped(self.report.name(ds.filename), f"not a frontal view ({view} from {evidence})")
        return case


class CXRSegInferenceOperator(Operator):
    """Runs the segmentation bundle at ``bundle_path`` on every case (masks at source resolution); a
    case that fails gives way to the next frontal image of its series."""

    def __init__(
        self, fragment: Fragment, *args, bundle_path: str | Path, report: RunReport, device: str = "cpu",
        threshold: float = 0.5, **kwargs,
    ) -> None:
        self.bundle = SegBundle.load(bundle_path, device=device)
        self.report = report
        self.threshold = threshold
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("cases")
        spec.output("segmented")

    def compute(self, op_input, op_output, context) -> None:
        op_output.emit(self._segmented(op_input.receive("cases")), "segmented")

    def _segmented(self, cases: Iterable[CXRCase]) -> Iterator[CXRCase]:
        """Each case with its masks, segmented when the writer asks for it (module docstring)."""
        for case in cases:
            while case is not None:
                try:
                    case.masks = self.bundle.predict(case.image.array, threshold=self.threshold)
                except Exception as err:  # e.g. out of GPU memory on one large image: its series' next one is tried
                    _skip(self.report, case.file, f"inference failed ({_reason(err)})")
                    case = first_usable_case(case.alternatives, self.report, case.voi)
                    continue
                case.names = self.bundle.channel_names
                yield case
                break


class CXRSegWriterOperator(Operator):
    """Writes ``<SOP Instance UID>_seg.dcm`` and ``<SOP Instance UID>_overlay.png`` per case.

    A second file with a UID already written (a copy of the same image) is skipped rather than
    overwriting the first one's outputs.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: str | Path, report: RunReport, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        self.report = report
        self.written: dict[str, str] = {}  # SOP Instance UID -> the file it was written for
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("segmented")

    def compute(self, op_input, op_output, context) -> None:
        for case in op_input.receive("segmented"):
            if case.uid in self.written:
                _skip(self.report, case.file, f"duplicate SOP Instance UID of {self.written[case.uid]}")
                continue
            try:
                self._write(case)
            except OutputWriteError:  # a full disk is not this file's fault: the batch stops, naming the output
                raise
            except Exception as err:  # e.g. a header highdicom refuses: the next case is still written
                _skip(self.report, case.file, f"SEG not written ({_reason(err)})")

    def _write(self, case: CXRCase) -> None:
        seg_path = self.output_folder / f"{case.uid}_seg.dcm"
        write_seg(seg_path, case.source, case.masks, case.names)
        overlay_path = self.output_folder / f"{case.uid}_overlay.png"
        try:
            with writing(overlay_path):
                save_overlay(overlay_path, case.image.array[0], case.masks)
        except Exception:
            seg_path.unlink(missing_ok=True)  # the report will say skipped: no SEG left without its overlay
            raise
        self.report.ok(case.file, seg_path.name)
        self.written[case.uid] = case.file
        logger.info("%s: wrote %s and its overlay (%d segments)", case.file, seg_path.name, len(case.names))
