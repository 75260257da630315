"""CheXpert CSV ingestion: parse, apply label policies, split by patient, and build a datalist.

Every stage that reads CheXpert-format data goes through :func:`build_datalist` (MIMIC-CXR-JPG
through :mod:`cxrdoll.data.mimic`, NIH ChestX-ray14 through :mod:`cxrdoll.data.nih`; all end in
:func:`assemble_datalist`), so the label conventions below hold everywhere. Rows are numbered like
a spreadsheet (the header is row 1), which is what users see when they open the CSV to fix it.

Label conventions
-----------------
Raw CheXpert values are ``1`` positive, ``0`` negative, ``-1`` uncertain and blank (not mentioned
in the report). :class:`LabelPolicy` turns them into a 0/1 ``label`` and a ``label_mask``
(1 = counts in the loss):

- uncertain (``-1``), per observation, as in the CheXpert paper: ``ignore`` (U-Ignore: masked),
  ``ones`` (U-Ones: positive) or ``zeros`` (U-Zeros: negative);
- blank, per observation: ``zeros`` (negative, the CheXpert paper's convention; default) or
  ``ignore`` (unknown, masked);
- ``No Finding``: CheXpert's labeller sets it to 1 only when no pathology is positive or
  uncertain (Support Devices do not count), and otherwise leaves it blank. With
  ``no_finding="derive"`` (default) a blank ``No Finding`` is therefore read as ``0`` when any
  pathology is positive, as uncertain (``-1``, then its uncertainty policy applies) when the
  pathologies are only uncertain, and as blank (its blank policy applies) otherwise.
  ``no_finding="raw"`` treats the column like any other.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from cxrdoll.constants import OBSERVATIONS, PATHOLOGIES
from cxrdoll.data.datalist import format_datalist
from cxrdoll.io import write_text_atomic

UNCERTAIN_POLICIES: tuple[str, ...] = ("ignore", "ones", "zeros")
BLANK_POLICIES: tuple[str, ...] = ("zeros", "ignore")
NO_FINDING_RULES: tuple[str, ...] = ("derive", "raw")
VIEWS: tuple[str, ...] = ("frontal", "lateral")

_PATHOLOGY_COLUMNS = [OBSERVATIONS.index(o) for o in PATHOLOGIES]
_NO_FINDING = OBSERVATIONS.index("No Finding")

_VIEW_IN_NAME = re.compile(r"_(frontal|lateral)\.[^./]+$")  # CheXpert's view1_frontal.jpg
_BLANK = 2  # internal int8 code for a blank cell
_BAD = 3  # internal int8 code for a value outside {1, 0, -1, blank}
_VALUE_CODES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": _BLANK}


@dataclass(frozen=True)
class ChexpertTable:
    """One parsed CheXpert CSV; arrays are row-aligned with ``paths``."""

    source: Path
    paths: list[str]  # the CSV "Path" column, validated relative paths
    patients: list[str]  # the folder two levels above each image (e.g. "patient00001")
    frontal: np.ndarray  # bool (N,)
    raw: np.ndarray  # float32 (N, 14): 1, 0, -1, NaN = blank

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class LabelPolicy:
    """How raw CheXpert values become training targets; one entry per observation."""

    uncertain: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(OBSERVATIONS, "ignore"))
    blank: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(OBSERVATIONS, "zeros"))
    no_finding: str = "derive"

    def __post_init__(self) -> None:
        for name, table, allowed in (("uncertain", self.uncertain, UNCERTAIN_POLICIES), ("blank", self.blank, BLANK_POLICIES)):
            if set(table) != set(OBSERVATIONS):
                raise ValueError(
                    f"{name} policy must name exactly the 14 observations; missing {sorted(set(OBSERVATIONS) - set(table))}, "
                    f"unknown {sorted(set(table) - set(OBSERVATIONS))}"
                )
            for obs, value in table.items():
                if value not in allowed:
                    raise ValueError(f"{name} policy for {obs!r} is {value!r}; expected one of {', '.join(allowed)}")
        if self.no_finding not in NO_FINDING_RULES:
            raise ValueError(f"no_finding rule {self.no_finding!r}; expected one of {', '.join(NO_FINDING_RULES)}")

    @classmethod
    def build(
        cls,
        uncertain: str = "ignore",
        blank: str = "zeros",
        uncertain_per: Mapping[str, str] | str | None = None,
        blank_per: Mapping[str, str] | str | None = None,
        no_finding: str = "derive",
    ) -> "LabelPolicy":
        """A global policy with per-observation overrides (a mapping or ``"Atelectasis=ones,..."``)."""
        # Checked here, else a bad global value is reported as the policy of 'No Finding', the first observation.
        for what, value, allowed in (("uncertain", uncertain, UNCERTAIN_POLICIES), ("blank", blank, BLANK_POLICIES)):
            if value not in allowed:
                raise ValueError(f"{what} policy {value!r}; expected one of {', '.join(allowed)}")
        unc = dict.fromkeys(OBSERVATIONS, uncertain)
        unc.update(_per_observation(uncertain_per, "uncertain"))
        blk = dict.fromkeys(OBSERVATIONS, blank)
        blk.update(_per_observation(blank_per, "blank"))
        return cls(uncertain=unc, blank=blk, no_finding=no_finding)

    def to_json(self) -> dict:
        return {"uncertain": dict(self.uncertain), "blank": dict(self.blank), "no_finding": self.no_finding}

    def apply(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``raw`` float (N, 14) with NaN blanks -> (``label`` float32 0/1, ``label_mask`` int8 0/1).

        A list of rows works too, blanks as None; one image's 14 values are ``[row]``.
        """
        raw = self.effective_raw(raw)
        unc_ones = np.array([self.uncertain[o] == "ones" for o in OBSERVATIONS])
        unc_ignore = np.array([self.uncertain[o] == "ignore" for o in OBSERVATIONS])
        blank_ignore = np.array([self.blank[o] == "ignore" for o in OBSERVATIONS])
        uncertain = raw == -1
        blank = np.isnan(raw)
        label = (raw == 1) | (uncertain & unc_ones)
        ignored = (uncertain & unc_ignore) | (blank & blank_ignore)
        return label.astype(np.float32), (~ignored).astype(np.int8)

    def effective_raw(self, raw: np.ndarray) -> np.ndarray:
        """Raw values with a blank "No Finding" derived from the pathologies (see module docstring)."""
        raw = _raw_rows(raw)
        if self.no_finding == "raw":
            return raw
        raw = raw.copy()
        pathologies = raw[:, _PATHOLOGY_COLUMNS]
        blank = np.isnan(raw[:, _NO_FINDING])
        any_positive = (pathologies == 1).any(axis=1)
        any_uncertain = (pathologies == -1).any(axis=1)
        raw[blank & any_positive, _NO_FINDING] = 0
        raw[blank & ~any_positive & any_uncertain, _NO_FINDING] = -1
        return raw


def _raw_rows(raw: object) -> np.ndarray:
    """``raw`` as a float (N, 14) array (None = blank); a ValueError naming the shape otherwise.

    One image's (14,) row failed with numpy's "too many indices", a row of 13 with a broadcast error.
    """
    array = np.asarray(raw)
    if not np.issubdtype(array.dtype, np.floating):
        try:
            array = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"raw labels must be numbers 1, 0, -1 or NaN/None for blank ({err})") from None
    if array.ndim != 2 or array.shape[1] != len(OBSERVATIONS):
        hint = "; one image's row is [row] (or row[None])" if array.shape == (len(OBSERVATIONS),) else ""
        raise ValueError(f"raw labels must be (N, {len(OBSERVATIONS)}): one row per image, one column per "
                         f"observation in OBSERVATIONS order, got shape {array.shape}{hint}")
    return array


def _per_observation(spec: Mapping[str, str] | str | None, what: str) -> dict[str, str]:
    """Parse ``"Atelectasis=ones,Pleural Effusion=zeros"``; names match case-insensitively, ``_`` = space."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        pairs = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"{what} policy {part!r}: expected OBSERVATION=POLICY, e.g. 'Atelectasis=ones'")
            pairs.append((name.strip(), value.strip()))
    else:
        pairs = list(spec.items())
    by_key = {_name_key(o): o for o in OBSERVATIONS}
    out = {}
    for name, value in pairs:
        if _name_key(name) not in by_key:
            raise ValueError(f"{what} policy names unknown observation {name!r}; expected one of {', '.join(OBSERVATIONS)}")
        out[by_key[_name_key(name)]] = value
    return out


def _name_key(name: str) -> str:
    return name.strip().lower().replace("_", " ")


def read_chexpert_csv(path: str | os.PathLike) -> ChexpertTable:
    """Parse and validate a CheXpert CSV; the first problem (in row, then column order) raises one
    ``ValueError`` naming its row and column.

    Column-wise numpy checks keep CheXpert's 223,414 rows to well under a second of parsing.
    """
    path = Path(path)
    cells = read_csv_cells(path, OBSERVATIONS, optional=("Frontal/Lateral",))
    header, rows = cells.header, cells.rows
    problems: list[tuple[int, int, str]] = []  # (data row index, header position, message)

    def problem(i: int, column: str, message: str) -> None:
        problems.append((i, header.index(column), f"{path} row {rows[i]}, column {column!r}: {message}"))

    raw, bad_label = raw_labels(cells)
    if bad_label is not None:
        problem(*bad_label)

    paths = list(map(str.strip, cells.text["Path"]))
    if "Frontal/Lateral" in cells.short:
        views = cells.short["Frontal/Lateral"]
        frontal = views == b"Frontal"
        for i in np.flatnonzero(~frontal & (views != b"Lateral")).tolist():
            value = cells.cell("Frontal/Lateral", i).strip()
            if value not in ("Frontal", "Lateral"):
                problem(i, "Frontal/Lateral", f"value {value!r} is not Frontal or Lateral")
                break
            frontal[i] = value == "Frontal"
    else:  # a labels-only CSV (e.g. of the test set): CheXpert's file names say the view
        named = [_VIEW_IN_NAME.search(p) for p in paths]
        frontal = np.array([m is not None and m[1] == "frontal" for m in named], dtype=bool)
        unnamed = next((i for i, m in enumerate(named) if m is None), None)
        if unnamed is not None:
            problem(unnamed, "Path", f"{paths[unnamed]!r} names no view (<name>_frontal.jpg or _lateral.jpg) and "
                    "the CSV has no 'Frontal/Lateral' column")
    joined = "\n" + "\n".join(paths) + "\n"
    try:
        patients = [p.rsplit("/", 3)[-3] for p in paths]
    except IndexError:  # fewer than three path parts: reported below
        patients = [""]
    if any(s in joined for s in ("\n\n", "\n/", "\\", ":", "..")) or "" in patients:  # rare: find the row
        bad_path = next(((i, m) for i, m in enumerate(map(_path_problem, paths)) if m), None)
        if bad_path is not None:
            problem(bad_path[0], "Path", f"{paths[bad_path[0]]!r} {bad_path[1]}")
    if problems:
        raise ValueError(min(problems)[2])
    if len(set(paths)) != len(paths):
        seen: dict[str, int] = {}
        for row, p in zip(rows, paths):
            if p in seen:
                raise ValueError(f"{path} row {row}, column 'Path': {p!r} duplicates row {seen[p]}")
            seen[p] = row
    return ChexpertTable(path, paths, patients, frontal, raw)


@dataclass(frozen=True)
class CsvCells:
    """A CSV's columns as read: ``text`` columns as strings, ``short`` columns as fixed-width bytes."""

    header: list[str]
    rows: list[int]  # spreadsheet row number of each data row
    text: dict[str, list[str]]
    short: dict[str, np.ndarray]  # dtype S<width>; a longer cell is cut to ``width`` bytes, so never matches
    cell: Callable[[str, int], str]  # original text of a cell, for error messages


_SHORT_WIDTH = 8  # longer than any valid value ("-1.0", "Frontal", "Lateral")


def read_csv_cells(path: Path, short: Sequence[str], text: Sequence[str] = ("Path",),
                   optional: Sequence[str] = (), optional_text: Sequence[str] = ()) -> CsvCells:
    """Read the CSV's header and its ``text`` and ``short`` columns, and the ``optional`` short and
    ``optional_text`` text columns the header has; a ``.gz`` file is gunzipped.

    Empty names at the end of the header are no columns: a row may leave their fields out. NIH's
    ``BBox_List_2017.csv`` has the header ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (nine
    fields) over rows of six. Plain files (no quotes, equal field counts) are cut up with numpy on the
    raw bytes; anything else goes through the ``csv`` module, which also finds the row to blame.
    """
    short, text = tuple(short), tuple(text)
    try:
        stored = path.read_bytes()
        content = (gzip.decompress(stored) if path.name.endswith(".gz") else stored).decode("utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: CSV file not found") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: not a readable gzip file ({err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file ({err})") from None
    content = content.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as text mode reads
    header_line, _, body = content.rstrip("\n").partition("\n")
    if not header_line.strip():
        raise ValueError(f"{path}: empty file; expected a header row")
    header = [h.strip() for h in next(csv.reader([header_line]))]
    missing = [c for c in text + short if c not in header]
    if missing:
        raise ValueError(f"{path} row 1 (header): missing column(s) {', '.join(map(repr, missing))}")
    short += tuple(c for c in optional if c in header and c not in short)
    text += tuple(c for c in optional_text if c in header and c not in text)
    if not body.strip():
        raise ValueError(f"{path}: no data rows after the header")
    named = len(header)
    while named > 1 and not header[named - 1]:
        named -= 1
    if '"' not in content:
        for width in dict.fromkeys((len(header), named)):  # the header's width, else that of its named columns
            cells = _split_plain(header, width, body + "\n", short, text)
            if cells is not None:
                return cells

    try:
        records = list(csv.reader(io.StringIO(content)))
    except csv.Error as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from None
    rows = [i + 1 for i, rec in enumerate(records) if rec and i > 0]  # blank lines are skipped
    data = [records[r - 1] for r in rows]
    for row, rec in zip(rows, data):
        if not named <= len(rec) <= len(header):
            named_only = f" ({named} named)" if named < len(header) else ""
            raise ValueError(f"{path} row {row}: {len(rec)} fields, but the header has {len(header)}{named_only}")
    index = {c: header.index(c) for c in header}
    return CsvCells(
        header,
        rows,
        {c: [rec[index[c]] for rec in data] for c in text},
        {c: np.array([rec[index[c]].encode()[:_SHORT_WIDTH] for rec in data], dtype=f"S{_SHORT_WIDTH}") for c in short},
        lambda column, i: data[i][index[column]],
    )


def _split_plain(header: list[str], width: int, body: str, short: Sequence[str], text: Sequence[str]) -> CsvCells | None:
    """Field boundaries from the positions of ',' and '\\n'; None unless every row has ``width`` fields."""
    n = body.count("\n")
    raw = body.encode()
    b = np.frombuffer(raw, dtype=np.uint8)
    seps = np.flatnonzero((b == ord(",")) | (b == ord("\n")))
    if len(seps) != n * width or not (b[seps[width - 1 :: width]] == ord("\n")).all():
        return None
    ends = seps.reshape(n, width)  # ends[i, j]: offset of the separator after field j of row i

    def span(j: int) -> tuple[np.ndarray, np.ndarray]:
        start = ends[:, j - 1] + 1 if j else np.concatenate(([0], ends[:-1, -1] + 1))
        return start, ends[:, j]

    def texts(start: np.ndarray, end: np.ndarray) -> list[str]:
        if len(raw) == len(body):  # ASCII: byte offsets are character offsets
            return list(map(body.__getitem__, map(slice, start.tolist(), end.tolist())))
        return [raw[s:e].decode() for s, e in zip(start.tolist(), end.tolist())]

    def fixed(j: int) -> np.ndarray:
        """Column ``j`` as bytes cut to _SHORT_WIDTH, one gather per byte position."""
        start, end = span(j)
        length = end - start
        out = np.zeros((n, _SHORT_WIDTH), dtype=np.uint8)
        for k in range(min(_SHORT_WIDTH, int(length.max(initial=0)))):
            out[:, k] = np.where(length > k, b[np.minimum(start + k, len(b) - 1)], 0)
        return out.view(f"S{_SHORT_WIDTH}").ravel()

    def cell(column: str, i: int) -> str:
        start, end = span(header.index(column))
        return texts(start[i : i + 1], end[i : i + 1])[0]

    return CsvCells(header, list(range(2, n + 2)), {c: texts(*span(header.index(c))) for c in text},
                    {c: fixed(header.index(c)) for c in short}, cell)


def id_column(path: Path, cells: CsvCells, column: str, pattern: str, wording: str) -> list[str]:
    """A text column whose every value matches ``pattern`` (a regex without newlines); ids go into image paths."""
    values = cells.text[column]
    if not re.fullmatch(f"(?:{pattern}\n)*", "\n".join(values) + "\n"):  # rare: find the row
        i = next(i for i, v in enumerate(values) if not re.fullmatch(pattern, v))
        raise ValueError(f"{path} row {cells.rows[i]}, column {column!r}: value {values[i]!r} is not {wording}")
    return values


def row_index(path: Path, cells: CsvCells, what: str, keys: list[str]) -> dict[str, int]:
    """key -> data row index; a key given twice is an error naming both rows."""
    index = dict(zip(keys, range(len(keys))))
    if len(index) != len(keys):
        seen: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key in seen:
                raise ValueError(f"{path} row {cells.rows[i]}: {what} {key!r} duplicates row {cells.rows[seen[key]]}")
            seen[key] = i
    return index


def raw_labels(cells: CsvCells) -> tuple[np.ndarray, tuple[int, str, str] | None]:
    """The 14 observation columns (read as ``short``) as float32 (N, 14), NaN = blank, and the first
    bad cell in row, then header order, as (data row index, column, message); None when all are good."""
    short = np.stack([cells.short[obs] for obs in OBSERVATIONS])  # (14, N)
    codes = np.full(short.shape, _BAD, dtype=np.int8)
    for literal, code in _VALUE_CODES.items():
        codes[short == literal.encode()] = code
    bad = None
    for i, j in sorted(np.argwhere(codes.T == _BAD).tolist(), key=lambda ij: (ij[0], cells.header.index(OBSERVATIONS[ij[1]]))):
        value = cells.cell(OBSERVATIONS[j], i)
        codes[j, i] = _VALUE_CODES.get(value.strip(), _BAD)  # tolerate surrounding spaces
        if codes[j, i] == _BAD:
            bad = (i, OBSERVATIONS[j], f"value {value!r} is not 1, 0, -1 or blank")
            break
    return np.where(codes == _BLANK, np.nan, codes).T.astype(np.float32), bad


def _path_problem(p: str) -> str | None:
    """What is wrong with a CSV path (it could leave the dataset root, or names no patient), or None."""
    if not p:
        return "is empty"
    if p.startswith(("/", "\\")) or p[1:2] == ":":
        return "is absolute; paths must be relative to --root"
    if "\\" in p:
        return "contains a backslash; use '/' between folders"
    if ".." in p.split("/"):
        return "contains '..'; paths must stay inside --root"
    if p.count("/") < 2 or not p.rsplit("/", 3)[-3]:
        return "has no patient folder; expected <patient>/<study>/<image>"
    return None


def split_patients(patients: Iterable[str], val_fraction: float, seed: int) -> set[str]:
    """Seeded choice of validation patients: a patient's images all land on one side.

    Depends only on the set of patients, the fraction and the seed (not on row order or view filter).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {val_fraction}")
    unique = sorted(set(patients))
    n_val = round(len(unique) * val_fraction)
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in order[:n_val]}


def image_paths(root: Path, paths: Sequence[str]) -> list[str]:
    """Absolute image paths under ``root``, for either convention users have.

    CSV paths start with the dataset folder (``CheXpert-v1.0-small/train/...``). ``root`` may be
    that folder's parent, or the folder itself (also renamed): the leading folder is dropped when
    it does not exist under ``root`` and either equals ``root``'s name or starts with ``CheXpert-``.
    """
    root_str = str(root).rstrip("/")
    firsts = {p.partition("/")[0] for p in paths}
    strip = {f for f in firsts if (f == root.name or f.startswith("CheXpert-")) and not (root / f).is_dir()}
    if not strip:
        return [f"{root_str}/{p}" for p in paths]
    if len(firsts) == 1:  # the usual case: one dataset folder, dropped for every path
        n = len(next(iter(firsts)))
        return [root_str + p[n:] for p in paths]
    return [f"{root_str}/{p.partition('/')[2] if p.partition('/')[0] in strip else p}" for p in paths]


def locate_csv(csv_path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """The CSV as given, else relative to ``root`` (so ``--root DIR --csv train.csv`` works)."""
    csv_path = Path(csv_path)
    if csv_path.is_file() or csv_path.is_absolute():
        return csv_path
    under_root = Path(root) / csv_path
    if under_root.is_file():
        return under_root
    raise FileNotFoundError(f"{csv_path}: CSV file not found (also looked for {under_root})")


def first_file(root: Path, names: Sequence[str], what: str, root_hint: str) -> Path:
    """``root/<name>`` for the first of ``names`` that is there (a release's CSV under its alternative names,
    e.g. plain or gzipped); else an error naming them and what ``--root`` should be."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root / names[0]}: {what} not found (nor {', '.join(names[1:])}); "
                            f"--root should be {root_hint}")


@dataclass
class ChexpertDatalist:
    """A built classification datalist, held as arrays: training items first, then validation."""

    meta: dict  # "observations", "policy", "root" of docs/FORMATS.md
    ids: list[str]  # CSV paths
    patients: list[str]
    images: list[str]  # absolute paths
    label: np.ndarray  # float32 (N, 14) 0/1
    label_mask: np.ndarray  # int8 (N, 14) 0/1
    raw: np.ndarray  # float32 (N, 14): 1, 0, -1, NaN = blank
    n_training: int
    skipped_views: int
    missing: list[str]  # CSV paths of images not found (skipped with allow_missing)
    skipped: dict[str, int] = field(default_factory=dict)  # rows the source left out, by reason (MIMIC: test split)

    def to_dict(self) -> dict:
        """The datalist as docs/FORMATS.md describes it (what :meth:`write` writes)."""
        items = _items(self.images, self.ids, self.patients, self.label, self.label_mask, self.raw)
        return {**self.meta, "training": items[: self.n_training], "validation": items[self.n_training :]}

    def write(self, path: str | os.PathLike) -> None:
        """Atomic write of :meth:`to_dict`'s JSON, one item per line, in about a second for 200k items."""
        lines = _item_json_lines(self.images, self.ids, self.patients, self.label, self.label_mask, self.raw)
        sections = {"training": lines[: self.n_training], "validation": lines[self.n_training :]}
        write_text_atomic(path, format_datalist(self.meta, sections))

    def summary(self) -> str:
        """Counts per observation under the chosen policy, for the console."""
        policy = self.meta["policy"]
        n = len(self.label)
        lines = [
            f"{n} images ({'/'.join(policy['views'])}) from {len(set(self.patients))} patients: "
            f"{self.n_training} training, {n - self.n_training} validation",
            f"skipped: {self.skipped_views} other views, {len(self.missing)} missing files"
            + "".join(f", {count} {reason}" for reason, count in self.skipped.items()),
            f"{'observation':<27}{'policy -1/blank':>16}{'positive':>10}{'negative':>10}{'ignored':>9}"
            f"{'raw -1':>9}{'raw blank':>10}",
        ]
        counted = self.label_mask == 1
        for j, obs in enumerate(OBSERVATIONS):
            pos = int((counted[:, j] & (self.label[:, j] == 1)).sum())
            neg = int((counted[:, j] & (self.label[:, j] == 0)).sum())
            lines.append(
                f"{obs:<27}{policy['uncertain'][obs] + '/' + policy['blank'][obs]:>16}{pos:>10}{neg:>10}"
                f"{int((~counted[:, j]).sum()):>9}{int((self.raw[:, j] == -1).sum()):>9}"
                f"{int(np.isnan(self.raw[:, j]).sum()):>10}"
            )
        return "\n".join(lines)


def build_datalist(
    root: str | os.PathLike,
    csv_path: str | os.PathLike,
    *,
    valid_csv: str | os.PathLike | None = None,
    views: Sequence[str] | str = ("frontal",),
    policy: LabelPolicy | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    allow_missing: bool = False,
) -> ChexpertDatalist:
    """The classification datalist of docs/FORMATS.md from CheXpert CSV(s).

    With ``valid_csv`` its rows are the validation list (patients must not overlap); otherwise a
    seeded patient-level split of ``csv_path`` takes ``val_fraction`` of the patients. Relative
    CSV paths are looked up as given, then under ``root``.
    """
    policy = policy or LabelPolicy()
    views = check_views(views)
    root = Path(root).expanduser().absolute()
    if check_files and not root.is_dir():
        raise FileNotFoundError(f"{root}: --root is not a folder")
    train = read_chexpert_csv(locate_csv(csv_path, root))
    if valid_csv is None:
        val_patients = split_patients(train.patients, val_fraction, seed)
        sides = [(train, np.fromiter(map(val_patients.__contains__, train.patients), bool, len(train)))]
        split = {"method": "patient", "val_fraction": val_fraction, "seed": seed}
    else:
        valid = read_chexpert_csv(locate_csv(valid_csv, root))
        shared = set(train.patients) & set(valid.patients)
        if shared:
            raise ValueError(
                f"{len(shared)} patient(s) appear in both {train.source} and {valid.source} "
                f"(e.g. {sorted(shared)[0]!r}); a patient must not be in training and validation"
            )
        sides = [(train, np.zeros(len(train), bool)), (valid, np.ones(len(valid), bool))]
        split = {"method": "valid_csv", "valid_csv": str(valid.source)}
    rows = [ImageRows(table.source, table.paths, table.patients, table.frontal, ~table.frontal, table.raw, val) for table, val in sides]
    return assemble_datalist(
        root,
        rows,
        lambda paths: image_paths(root, paths),
        views=views,
        policy=policy,
        split=split,
        check_files=check_files,
        allow_missing=allow_missing,
        root_hint="the dataset folder (holding train/) or its parent",
        labels_csv=train.source,
    )


@dataclass(frozen=True)
class ImageRows:
    """Images read from one source file, row-aligned, with their side of the split: what
    :func:`assemble_datalist` turns into a datalist, whichever dataset they come from."""

    source: Path  # named in messages
    ids: list[str]  # relative image paths, the datalist ids
    patients: list[str]
    frontal: np.ndarray  # bool (N,)
    lateral: np.ndarray  # bool (N,); neither frontal nor lateral: another view, never kept
    raw: np.ndarray  # float32 (N, 14): 1, 0, -1, NaN = blank
    validation: np.ndarray  # bool (N,)

    def __len__(self) -> int:
        return len(self.ids)


def assemble_datalist(
    root: Path,
    sides: Sequence[ImageRows],
    image_files: Callable[[list[str]], list[str]] | None = None,
    *,
    views: Sequence[str],
    policy: LabelPolicy,
    split: dict,
    check_files: bool,
    allow_missing: bool,
    root_hint: str,
    labels_csv: Path,
    skipped: Mapping[str, int] | None = None,
) -> ChexpertDatalist:
    """Keep the rows of ``views`` whose image is there, training rows first, and apply ``policy``.

    One path for every dataset, so views, missing files and labels are handled alike. ``image_files``
    maps kept ids to absolute paths (default: each id under ``root``); ``root_hint`` says what
    ``--root`` should be when no image is found; ``labels_csv`` (the file the labels were read from) is
    recorded in the policy, so a datalist says which labeller's output it holds; ``skipped`` counts rows
    the caller left out before (reported in the summary).
    """
    under_root = str(root).rstrip("/")
    files_of = image_files or (lambda paths: [f"{under_root}/{p}" for p in paths])
    skipped = dict(skipped or {})
    ids, patients, images, raws, is_val, missing, skipped_views = [], [], [], [], [], [], 0
    for rows in sides:
        keep = (rows.frontal & ("frontal" in views)) | (rows.lateral & ("lateral" in views))
        skipped_views += int((~keep).sum())
        idx = np.flatnonzero(keep).tolist()
        paths = [rows.ids[i] for i in idx]
        files = files_of(paths)
        if check_files:
            present = np.array([os.path.isfile(f) for f in files], dtype=bool)
            absent = [p for p, ok in zip(paths, present) if not ok]
            if absent and not allow_missing:
                raise FileNotFoundError(_missing_message(rows.source, root, absent, len(files), root_hint))
            missing += absent
            idx = [i for i, ok in zip(idx, present) if ok]
            paths = [p for p, ok in zip(paths, present) if ok]
            files = [f for f, ok in zip(files, present) if ok]
        ids += paths
        images += files
        patients += [rows.patients[i] for i in idx]
        raws.append(rows.raw[idx])
        is_val.append(rows.validation[idx])

    val_mask = np.concatenate(is_val)
    if not len(val_mask):  # an empty datalist would only fail later, in training
        others = "".join(f", {count} {reason}" for reason, count in skipped.items())
        sources = " and ".join(str(rows.source) for rows in sides)  # a valid_csv's rows count too
        total = sum(map(len, sides)) + sum(skipped.values())
        raise ValueError(f"{sources}: no image left of {total} rows "
                         f"({skipped_views} not of the views {list(views)}, {len(missing)} missing files{others})")
    order = np.concatenate([np.flatnonzero(~val_mask), np.flatnonzero(val_mask)]).tolist()  # training first
    raw = np.concatenate(raws)[order]
    label, label_mask = policy.apply(raw)
    meta = {
        "observations": list(OBSERVATIONS),
        "policy": {**policy.to_json(), "views": list(views), "split": split, "labels_csv": str(labels_csv)},
        "root": str(root),
    }
    return ChexpertDatalist(
        meta,
        [ids[i] for i in order],
        [patients[i] for i in order],
        [images[i] for i in order],
        label,
        label_mask,
        raw,
        n_training=int((~val_mask).sum()),
        skipped_views=skipped_views,
        missing=missing,
        skipped=skipped,
    )


def check_views(views: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(views, str):
        views = [v.strip() for v in views.split(",") if v.strip()]
    views = tuple(VIEWS if list(views) == ["all"] else (v.lower() for v in views))
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"views {list(views)}: expected a comma list of {', '.join(VIEWS)}, or 'all'")
    return tuple(v for v in VIEWS if v in views)


def _missing_message(source: Path, root: Path, absent: list[str], total: int, root_hint: str) -> str:
    examples = ", ".join(absent[:3]) + (", ..." if len(absent) > 3 else "")
    hint = f" None was found: --root should be {root_hint}." if len(absent) == total else ""
    return (
        f"{len(absent)} of {total} images listed in {source} are missing under {root} ({examples}).{hint} "
        "Skip them with --allow-missing, or build from the CSV alone with --no-check-files."
    )


def _raw_codes(raw: np.ndarray) -> np.ndarray:
    """Raw values as indices into ``_RAW_TOKENS``."""
    return np.select([raw == 1, raw == 0, raw == -1], [0, 1, 2], 3)


_RAW_TOKENS = (1, 0, -1, None)


def _items(images, ids, patients, label, label_mask, raw) -> list[dict]:
    raw_lists = [[_RAW_TOKENS[c] for c in r] for r in _raw_codes(raw).tolist()]
    return [
        {"image": im, "id": i, "patient": p, "label": lab, "label_mask": m, "raw_label": r}
        for im, i, p, lab, m, r in zip(images, ids, patients, label.tolist(), label_mask.tolist(), raw_lists)
    ]


def _item_json_lines(images, ids, patients, label, label_mask, raw) -> list[str]:
    """``json.dumps(item)`` of every item, byte for byte, assembled from preformatted list halves."""
    lab1, lab2 = _json_list_halves(label.astype(np.int64), ("0.0", "1.0"))
    msk1, msk2 = _json_list_halves(label_mask.astype(np.int64), ("0", "1"))
    raw1, raw2 = _json_list_halves(_raw_codes(raw), tuple(json.dumps(t) for t in _RAW_TOKENS))
    enc = encode_basestring_ascii  # what json.dumps uses for strings
    return [
        f'{{"image": {enc(im)}, "id": {enc(i)}, "patient": {enc(p)}, "label": [{l1}, {l2}], '
        f'"label_mask": [{m1}, {m2}], "raw_label": [{r1}, {r2}]}}'
        for im, i, p, l1, l2, m1, m2, r1, r2 in zip(images, ids, patients, lab1, lab2, msk1, msk2, raw1, raw2)
    ]


def _json_list_halves(codes: np.ndarray, tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """JSON text of the first and second half of each row of small integer ``codes``.

    Each distinct half-row (at most ``len(tokens) ** 7`` of them) is formatted once.
    """
    halves = []
    for part in np.array_split(codes.astype(np.int64), 2, axis=1):
        weights = len(tokens) ** np.arange(part.shape[1], dtype=np.int64)
        distinct, inverse = np.unique(part @ weights, return_inverse=True)
        texts = [", ".join(tokens[(key // w) % len(tokens)] for w in weights.tolist()) for key in distinct.tolist()]
        halves.append(np.array(texts, dtype=object)[inverse.ravel()].tolist())
    return halves[0], halves[1]
