"""MIMIC-CXR-JPG ingestion: the classification datalist of docs/FORMATS.md from PhysioNet's CSVs.

MIMIC-CXR-JPG labels CheXpert's 14 observations (with CheXpert's labeller or NegBio), one row per
study, so the labels go through :class:`cxrdoll.data.chexpert.LabelPolicy` and the datalist through
:func:`cxrdoll.data.chexpert.assemble_datalist`, exactly as for CheXpert. Read under ``root``, each
CSV plain or gzipped (as PhysioNet ships them):

- ``mimic-cxr-2.0.0-metadata.csv``: one row per image (dicom_id, subject_id, study_id, ViewPosition,
  and ViewCodeSequence_CodeMeaning where ViewPosition is blank);
- ``mimic-cxr-2.0.0-split.csv``: each image's official split (train / validate / test);
- ``mimic-cxr-2.0.0-chexpert.csv`` or ``mimic-cxr-2.0.0-negbio.csv``: labels per (subject_id, study_id);
- the images, ``files/p<first two digits of subject_id>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.

Left out and counted, each image under the first reason that holds: the test split, a study
without a label row, a view other than PA/AP (frontal) or LATERAL/LL (lateral), unnamed included.
Rows are numbered like a spreadsheet (the header is row 1), as for CheXpert.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.chexpert import (
    ChexpertDatalist,
    CsvCells,
    ImageRows,
    LabelPolicy,
    assemble_datalist,
    check_views,
    first_file,
    id_column,
    raw_labels,
    read_csv_cells,
    row_index,
    split_patients,
)
from cxrdoll.dicom.views import FRONTAL_VIEWS, code_meaning_view, position_view

METADATA_CSV = "mimic-cxr-2.0.0-metadata"
SPLIT_CSV = "mimic-cxr-2.0.0-split"
LABEL_CSVS: dict[str, str] = {"chexpert": "mimic-cxr-2.0.0-chexpert", "negbio": "mimic-cxr-2.0.0-negbio"}
SPLIT_METHODS: tuple[str, ...] = ("official", "patient")
_SPLIT_VALUES = ("train", "validate", "test")
VIEW_CODE_COLUMN = "ViewCodeSequence_CodeMeaning"  # names the view of some images whose ViewPosition is blank
_ROOT_HINT = "the folder holding files/ and the MIMIC-CXR-JPG CSVs"


def build_mimic_datalist(
    root: str | os.PathLike,
    *,
    labeler: str = "chexpert",
    split: str = "official",
    views: Sequence[str] | str = ("frontal",),
    policy: LabelPolicy | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    allow_missing: bool = False,
) -> ChexpertDatalist:
    """The classification datalist of docs/FORMATS.md from a MIMIC-CXR-JPG copy at ``root``.

    ``split="official"``: the split CSV's train and validate images are training and validation;
    ``"patient"``: they are split by patient as :func:`cxrdoll.data.chexpert.build_datalist` does.
    Test-split images are always left out.
    """
    policy = policy or LabelPolicy()
    views = check_views(views)
    if labeler not in LABEL_CSVS:
        raise ValueError(f"labeler {labeler!r}; expected one of {', '.join(LABEL_CSVS)}")
    if split not in SPLIT_METHODS:
        raise ValueError(f"split {split!r}; expected one of {', '.join(SPLIT_METHODS)}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: --root is not a folder")
    meta_path, split_path, labels_path = (first_file(root, (f"{s}.csv", f"{s}.csv.gz"), "MIMIC-CXR-JPG CSV", _ROOT_HINT)
                                          for s in (METADATA_CSV, SPLIT_CSV, LABEL_CSVS[labeler]))

    meta = read_csv_cells(meta_path, (), ("dicom_id", "subject_id", "study_id", "ViewPosition"),
                          optional_text=(VIEW_CODE_COLUMN,))
    dicom_ids = id_column(meta_path, meta, "dicom_id", r"[0-9A-Za-z_\-]+", "a DICOM id (letters, digits, '-', '_')")
    subjects = id_column(meta_path, meta, "subject_id", "[0-9]+", "a number")
    studies = id_column(meta_path, meta, "study_id", "[0-9]+", "a number")
    row_index(meta_path, meta, "dicom_id", dicom_ids)  # an image listed twice is refused

    sides = _official_split(split_path, meta_path, meta, dicom_ids)
    test = sides == "test"

    labels = read_csv_cells(labels_path, OBSERVATIONS, ("subject_id", "study_id"))
    label_keys = [f"{s}/{t}" for s, t in zip(id_column(labels_path, labels, "subject_id", "[0-9]+", "a number"),
                                             id_column(labels_path, labels, "study_id", "[0-9]+", "a number"))]
    raw, bad = raw_labels(labels)
    if bad is not None:
        i, column, message = bad
        raise ValueError(f"{labels_path} row {labels.rows[i]}, column {column!r}: {message}")
    label_row = row_index(labels_path, labels, "subject_id/study_id", label_keys)
    row_of = np.fromiter((label_row.get(f"{s}/{t}", -1) for s, t in zip(subjects, studies)), np.int64, len(subjects))
    unlabelled = ~test & (row_of < 0)

    patients = [f"p{s}" for s in subjects]
    if split == "official":
        validation = sides == "validate"
        split_record = {"method": "mimic_official", "split_csv": str(split_path)}
    else:
        val_patients = split_patients((patients[i] for i in np.flatnonzero(~test).tolist()), val_fraction, seed)
        validation = np.fromiter(map(val_patients.__contains__, patients), bool, len(patients))
        split_record = {"method": "patient", "val_fraction": val_fraction, "seed": seed}

    # Read as DICOM files are (cxrdoll.dicom.views): ViewPosition, else the view code's meaning. Not the
    # DICOM fallback after those (description texts, at last frontal): MIMIC's one text column,
    # PerformedProcedureStepDescription, describes the study ('CHEST (PA AND LAT)'), so an image neither
    # names is another view here.
    positions = meta.text["ViewPosition"]
    meanings = meta.text.get(VIEW_CODE_COLUMN, [""] * len(positions))
    view_of = {pair: position_view(pair[0]) or code_meaning_view(pair[1]) for pair in set(zip(positions, meanings))}
    view = np.array([view_of[pair] for pair in zip(positions, meanings)])
    kept = np.flatnonzero(~test & ~unlabelled)
    ids = [f"files/p{subjects[i][:2]}/p{subjects[i]}/s{studies[i]}/{dicom_ids[i]}.jpg" for i in kept.tolist()]
    rows = ImageRows(meta_path, ids, [patients[i] for i in kept.tolist()], np.isin(view[kept], FRONTAL_VIEWS),
                     view[kept] == "LATERAL", raw[row_of[kept]], validation[kept])
    return assemble_datalist(
        root,
        [rows],
        views=views,
        policy=policy,
        split=split_record,
        check_files=check_files,
        allow_missing=allow_missing,
        root_hint=_ROOT_HINT,
        labels_csv=labels_path,
        skipped={"test-split images": int(test.sum()), "images of studies without labels": int(unlabelled.sum())},
    )


def _official_split(split_path: Path, meta_path: Path, meta: CsvCells, dicom_ids: list[str]) -> np.ndarray:
    """Each metadata image's split (train, validate or test) from the split CSV, joined on dicom_id."""
    cells = read_csv_cells(split_path, (), ("dicom_id", "split"))
    values = cells.text["split"]
    unknown = set(values) - set(_SPLIT_VALUES)
    if unknown:
        i = next(i for i, v in enumerate(values) if v in unknown)
        raise ValueError(f"{split_path} row {cells.rows[i]}, column 'split': value {values[i]!r} is not "
                         f"{', '.join(_SPLIT_VALUES[:-1])} or {_SPLIT_VALUES[-1]}")
    row = row_index(split_path, cells, "dicom_id", cells.text["dicom_id"])
    found = [row.get(d, -1) for d in dicom_ids]
    if -1 in found:
        i = found.index(-1)
        raise ValueError(f"{meta_path} row {meta.rows[i]}: dicom_id {dicom_ids[i]!r} has no row in {split_path}")
    return np.array(values)[found]
