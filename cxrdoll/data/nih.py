"""NIH ChestX-ray14 ingestion: the classification datalist of docs/FORMATS.md from the NIH Clinical Center release.

NIH labels 14 findings of its own, present or absent, per image. They are mapped onto CheXpert's
observations by :func:`cxrdoll.data.shared_sets.nih_labels` (as for the 64 px NIH subset): an
observation NIH labels is 1 or 0, one it does not (Enlarged Cardiomediastinum, Fracture, Support
Devices) is blank, which is why the default blank policy here is ``ignore``. The labels then go
through :class:`cxrdoll.data.chexpert.LabelPolicy` and :func:`cxrdoll.data.chexpert.assemble_datalist`,
as for CheXpert. Read under ``root``:

- ``Data_Entry_2017_v2020.csv``, else the older ``Data_Entry_2017.csv`` (the rows of both end in an
  empty column): one row per image (Image Index, Finding Labels, Patient ID, View Position, ...);
- ``train_val_list.txt`` and ``test_list.txt``: the official split, one image name per line;
- the images, wherever they are under ``root`` (``images_001/images/`` ... ``images_012/images/`` as
  downloaded, or one ``images/``), found by one walk of ``root``.

NIH has no validation list: train_val_list's images are split by patient. Left out and counted,
each image under the first reason that holds: test_list's images, images in neither list, a View
Position other than PA/AP (frontal). Rows are numbered like a spreadsheet (the header is row 1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

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
    read_csv_cells,
    row_index,
    split_patients,
)
from cxrdoll.data.shared_sets import NIH_FINDINGS, nih_labels
from cxrdoll.dicom.views import FRONTAL_VIEWS, position_view

DATA_ENTRY_CSVS: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # preferred first
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
VALIDATION_SOURCES: tuple[str, ...] = ("patient", "test-list")
NO_FINDING = "No Finding"
_IMAGE_NAME = r"[0-9A-Za-z_\-][0-9A-Za-z_.\-]*"  # a file name: no folder, not '.' or '..'
_ROOT_HINT = ("the folder holding Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv), train_val_list.txt, "
              "test_list.txt and the images (images_001/images/ ... or images/)")


def build_nih_datalist(
    root: str | os.PathLike,
    *,
    views: Sequence[str] | str = ("frontal",),
    policy: LabelPolicy | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    allow_missing: bool = False,
    validation: str = "patient",
) -> ChexpertDatalist:
    """The classification datalist of docs/FORMATS.md from an NIH ChestX-ray14 copy at ``root``.

    ``validation="patient"``: train_val_list's images are split by patient into training and
    validation, as :func:`cxrdoll.data.chexpert.build_datalist` splits; test_list's are left out.
    ``"test-list"``: train_val_list's images all train and test_list's are the validation list, the
    way to label NIH's boxed images (all of which ``prepare-nih-boxes`` can score are there). The
    default policy masks blanks (observations NIH does not label) instead of reading them as negatives.
    """
    if validation not in VALIDATION_SOURCES:
        raise ValueError(f"validation {validation!r}; expected one of {', '.join(VALIDATION_SOURCES)}")
    policy = policy or LabelPolicy.build(blank="ignore")
    views = check_views(views)
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: --root is not a folder")
    csv_path = first_file(root, DATA_ENTRY_CSVS, "NIH ChestX-ray14 CSV", _ROOT_HINT)
    cells = read_csv_cells(csv_path, (), ("Image Index", "Finding Labels", "Patient ID", "View Position"))
    names = image_names(csv_path, cells)
    row_index(csv_path, cells, "Image Index", names)  # an image listed twice is refused
    # zero-padded as in the image names (00000001_000.png is patient 1's)
    patients = [f"nih{int(p):08d}" for p in id_column(csv_path, cells, "Patient ID", "[0-9]+", "a number")]
    raw = finding_labels(csv_path, cells)

    list_paths = root / TRAIN_VAL_LIST, root / TEST_LIST
    train_val, test = (read_list(p) for p in list_paths)
    in_train_val = np.fromiter(map(train_val.__contains__, names), bool, len(names))
    in_test = np.fromiter(map(test.__contains__, names), bool, len(names))
    _check_patients_apart(list_paths, names, patients, (in_train_val, in_test))

    lists = {"train_val_list": str(list_paths[0]), "test_list": str(list_paths[1])}
    kept = np.flatnonzero(in_train_val | (in_test & (validation == "test-list"))).tolist()
    kept_patients = [patients[i] for i in kept]
    if validation == "test-list":
        is_val = in_test[kept]
        split = {"method": "nih_test_list", **lists}
        skipped = {}
    else:
        val_patients = split_patients(kept_patients, val_fraction, seed)
        is_val = np.fromiter(map(val_patients.__contains__, kept_patients), bool, len(kept))
        split = {"method": "patient", "val_fraction": val_fraction, "seed": seed, **lists}
        skipped = {"test-list images": int(in_test.sum())}
    kept_names = [names[i] for i in kept]
    found = find_images(root, kept_names) if check_files else {}
    view_of = {v: position_view(v) for v in set(cells.text["View Position"])}
    frontal = np.isin([view_of[cells.text["View Position"][i]] for i in kept], FRONTAL_VIEWS)
    rows = ImageRows(csv_path, [found.get(n, f"images/{n}") for n in kept_names], kept_patients, frontal,
                     np.zeros(len(kept), bool), raw[kept], is_val)
    return assemble_datalist(
        root,
        [rows],
        views=views,
        policy=policy,
        split=split,
        check_files=check_files,
        allow_missing=allow_missing,
        root_hint=_ROOT_HINT,
        labels_csv=csv_path,
        skipped={**skipped, "images in neither list": int((~in_train_val & ~in_test).sum())},
    )


def finding_labels(path: Path, cells: CsvCells) -> np.ndarray:
    """'Finding Labels' ('Effusion|Infiltration', 'No Finding') as raw CheXpert labels, float32 (N, 14):
    1 or 0 for the observations NIH labels, NaN (blank) for the others. Each distinct value is mapped once."""
    values = cells.text["Finding Labels"]
    distinct = dict.fromkeys(values, 0)
    table = np.full((len(distinct), len(OBSERVATIONS)), np.nan, np.float32)
    for k, value in enumerate(distinct):  # in order of first row, so the first bad row is named
        distinct[value] = k
        findings = {f.strip() for f in value.split("|")}
        if findings != {NO_FINDING}:
            unknown = sorted(findings - set(NIH_FINDINGS))
            if unknown:
                raise ValueError(f"{path} row {cells.rows[values.index(value)]}, column 'Finding Labels': value {value!r}: "
                                 f"{unknown[0]!r} is not an NIH finding; expected {NO_FINDING!r} alone or findings "
                                 f"joined by '|' among {', '.join(NIH_FINDINGS)}")
        for obs, label in nih_labels(findings, findings != {NO_FINDING}).items():
            table[k, OBSERVATIONS.index(obs)] = label
    return table[np.fromiter(map(distinct.__getitem__, values), np.int64, len(values))]


def image_names(path: Path, cells: CsvCells) -> list[str]:
    """The 'Image Index' column (of the Data_Entry and box CSVs), each a plain file name: names are looked
    up under ``--root`` and become ids, so one with a folder or '..' is refused naming its row."""
    return id_column(path, cells, "Image Index", _IMAGE_NAME, "an image file name (letters, digits, '.', '-', '_')")


def find_images(root: Path, names: Iterable[str]) -> dict[str, str]:
    """name -> its path relative to ``root``, for each of ``names`` found by one walk of ``root`` (a
    symlinked folder is followed, once). A name in two places is an error naming both: which one is
    meant cannot be told."""
    wanted = set(names)
    found: dict[str, str] = {}
    visited: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            dirs.clear()
            continue
        visited.add(real)
        dirs.sort()  # the same walk, so the same message, every time
        prefix = "" if folder == str(root) else Path(folder).relative_to(root).as_posix() + "/"
        for name in wanted.intersection(files):
            if name in found:
                raise ValueError(f"{root}: image {name} is there twice, {found[name]} and {prefix}{name}; keep one")
            found[name] = prefix + name
    return found


def read_list(path: Path) -> set[str]:
    """The image names of a split list, one a line."""
    try:
        return {line.strip() for line in path.read_text().splitlines()} - {""}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: NIH split list not found; --root should be {_ROOT_HINT}") from None


def _check_patients_apart(list_paths: tuple[Path, Path], names: list[str], patients: list[str], sides: tuple[np.ndarray, np.ndarray]) -> None:
    """A patient with images in both lists is refused: the test images would not be unseen."""
    image_of = [{patients[i]: names[i] for i in np.flatnonzero(side).tolist()} for side in sides]
    shared = sorted(image_of[0].keys() & image_of[1].keys())
    if shared:
        raise ValueError(f"{len(shared)} patient(s) have images in both {list_paths[0]} and {list_paths[1]} "
                         f"(e.g. {shared[0]!r}: {image_of[0][shared[0]]} and {image_of[1][shared[0]]}); "
                         "a patient must not be in training and test")
