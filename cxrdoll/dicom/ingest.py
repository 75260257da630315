"""Turn a folder of clinical DICOM files into normalised images, a MONAI datalist and a report.

Privacy: patient names and IDs are never read into the outputs or printed. With ``deidentify``,
output names are pseudonyms (a hash of the input path) and neither input paths nor DICOM UIDs are
written anywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from cxrdoll.data.datalist import write_datalist
from cxrdoll.dicom.loader import CXRImage, DicomInputError, dataset_to_image, read_dataset
from cxrdoll.dicom.views import is_usable_frontal
from cxrdoll.io import read_csv_rows, save_png_atomic, write_bytes_atomic, write_csv_atomic

FORMATS: tuple[str, ...] = ("png", "nifti")
REPORT_COLUMNS: tuple[str, ...] = (
    "file", "status", "reason", "output", "modality", "view", "photometric", "voi", "rows", "cols",
)


@dataclass
class ReportRow:
    """One line of ``report.csv``: ``status`` is ``ok`` or ``skipped`` (with ``reason``)."""

    file: str
    status: str
    reason: str = ""
    output: str = ""
    modality: str = ""
    view: str = ""
    photometric: str = ""
    voi: str = ""
    rows: int | str = ""
    cols: int | str = ""


@dataclass
class IngestOptions:
    fmt: str = "png"
    size: int = 0  # 0 keeps the original resolution
    voi: str = "auto"
    views: str = "frontal"  # "frontal": PA, AP or unknown view; "all": any view
    deidentify: bool = False
    keep_duplicates: bool = False
    pseudonym_key: bytes | None = None  # secret for keyed (HMAC) pseudonyms; None: plain sha256 of the path


def ingest_folder(in_dir: str | Path, out_dir: str | Path, options: IngestOptions,
                  overwrite: bool = False) -> list[ReportRow]:
    """Ingest every file under ``in_dir`` (recursively); one bad file never stops the batch.

    An ``out_dir`` holding an earlier run's outputs is refused unless ``overwrite``, which removes
    them first: images rewritten in place under the old datalist (a killed re-run at another size)
    or left over from it (identifiable names beside a ``deidentify`` run's pseudonyms) mix two runs.
    Files in ``images/`` that no earlier report lists are refused, never deleted.
    """
    in_dir, out_dir = dicom_input_folder(Path(in_dir).resolve()), Path(out_dir).resolve()
    if options.fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {options.fmt!r}")
    if options.views not in ("frontal", "all"):
        raise ValueError(f"views must be 'frontal' or 'all', got {options.views!r}")
    rows: list[ReportRow] = []
    items: list[dict] = []
    seen_uids: dict[str, str] = {}
    files = _files_under(in_dir, exclude=out_dir)
    if not files:  # writing an empty datalist and report would replace the outputs of an earlier run
        raise ValueError(f"{in_dir}: no files found (searched recursively); nothing written")
    _clear_earlier_outputs(out_dir, overwrite)
    owners: dict[str, str] = {}  # output name -> the input it was given to
    for path in files:
        relative = path.relative_to(in_dir).as_posix()
        name = _output_name(relative, options.deidentify, options.pseudonym_key)
        if name.lower() in owners:  # 'Müller/1.dcm' and 'Möller/1.dcm' both sanitise to 'M_ller__1'
            name = f"{name}_{hashlib.sha256(relative.encode()).hexdigest()[:8]}"
        owners[name.lower()] = relative
        shown = name if options.deidentify else relative
        try:
            row, item = _ingest_one(path, name, out_dir, options, seen_uids, shown)
        except DicomInputError as err:
            row, item = ReportRow(shown, "skipped", err.problem.replace(str(path), shown)), None
        except Exception as err:  # an unexpected failure of one file must not stop the batch
            reason = f"{type(err).__name__}: {err}".replace(str(path), shown)
            row, item = ReportRow(shown, "skipped", reason), None
        rows.append(row)
        if item is not None:
            items.append(item)
    datalist = {"format": options.fmt, "size": options.size, "voi": options.voi, "training": items}
    if not options.deidentify:
        datalist["source"] = str(in_dir)
    write_datalist(out_dir / "datalist.json", datalist)
    write_report(out_dir / "report.csv", rows)
    return rows


def _clear_earlier_outputs(out_dir: Path, overwrite: bool) -> None:
    """Refuse, or with ``overwrite`` remove, what an earlier ingest wrote in ``out_dir``: the files its
    ``report.csv`` lists, then its report and datalist. Anything else in ``images/`` (a killed run's
    images, or files that are not ingest's) is never deleted: it is refused before anything is."""
    report, images = out_dir / "report.csv", out_dir / "images"
    earlier = [name for name in ("datalist.json", "report.csv") if (out_dir / name).exists()]
    present = sorted(p for p in images.rglob("*") if p.is_file()) if images.is_dir() else []
    if not earlier and not present:
        return
    if earlier and not overwrite:
        raise ValueError(f"{out_dir}: already holds {', '.join(earlier)} from an earlier run; pass --overwrite to "
                         "replace that run's outputs, or choose another --out")
    rows = read_csv_rows(report) if report.is_file() else []
    listed = {(out_dir / row["output"]).resolve() for row in rows if row.get("output")}
    unlisted = [p for p in present if p.resolve() not in listed]
    if unlisted:
        raise ValueError(f"{images}: holds {len(unlisted)} file(s) that no ingest report in {out_dir} lists (e.g. "
                         f"{unlisted[0].name}: a killed run's, or not ingest's); move them or choose another --out")
    for path in present:
        path.unlink()
    for name in earlier:
        (out_dir / name).unlink()


def write_report(path: Path, rows: Iterable[ReportRow]) -> None:
    write_csv_atomic(path, REPORT_COLUMNS, ([asdict(row)[k] for k in REPORT_COLUMNS] for row in rows))


def _ingest_one(
    path: Path, name: str, out_dir: Path, options: IngestOptions, seen_uids: dict[str, str], shown: str
) -> tuple[ReportRow, dict | None]:
    ds = read_dataset(path)
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if uid and uid in seen_uids and not options.keep_duplicates:
        return ReportRow(shown, "skipped", f"duplicate SOP Instance UID of {seen_uids[uid]}"), None
    image = dataset_to_image(ds, voi=options.voi, source=shown)
    meta = image.meta
    described = dict(
        modality=meta["modality"], view=meta["view"], photometric=meta["photometric"], voi=meta["voi"],
        rows=meta["original_shape"][0], cols=meta["original_shape"][1],
    )
    if options.views == "frontal" and not is_usable_frontal(meta["view"]):
        reason = f"not a frontal view ({meta['view']} from {meta['view_source']})"
        return ReportRow(shown, "skipped", reason, **described), None
    if uid:
        seen_uids[uid] = shown
    output = _write_image(image, out_dir / "images", name, options)
    item = {
        "image": str(output),
        "id": name,
        "modality": meta["modality"],
        "view": meta["view"],
        "pixel_spacing": _resized_spacing(meta, image.array.shape[1:], options.size),
    }
    return ReportRow(shown, "ok", "", str(output.relative_to(out_dir)), **described), item


def _write_image(image: CXRImage, folder: Path, name: str, options: IngestOptions) -> Path:
    array = image.array[0]
    if options.size:
        array = _resize_area(array, options.size)
    if options.fmt == "png":
        path = folder / f"{name}.png"
        # 8-bit, as load_image_transforms expects (it scales 0..255 to [0, 1]).
        save_png_atomic(path, np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8))
        return path
    import nibabel as nib

    path = folder / f"{name}.nii.gz"
    spacing = _resized_spacing(image.meta, image.array.shape[1:], options.size) or [1.0, 1.0]
    affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
    nifti = nib.Nifti1Image(array.astype(np.float32), affine)
    write_bytes_atomic(path, gzip.compress(nifti.to_bytes(), compresslevel=6))
    return path


def _resize_area(array: np.ndarray, size: int) -> np.ndarray:
    """Area interpolation, the same as the bundles' ``Resized(mode="area")``."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))[None, None]
    return torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")[0, 0].numpy()


def _resized_spacing(meta: dict, shape: tuple[int, ...], size: int) -> list[float] | None:
    spacing = meta["pixel_spacing"]
    if spacing is None or not size:
        return spacing
    return [spacing[0] * shape[0] / size, spacing[1] * shape[1] / size]


def dicom_input_folder(path: Path) -> Path:
    """``path`` if it is a folder (ingestion and the deploy app read every file under it), else an error saying which."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: input is not a folder (give the folder holding the DICOM files)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: input folder not found")
    return path


def _files_under(root: Path, exclude: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and exclude not in p.parents)


def _output_name(relative: str, deidentify: bool, key: bytes | None = None) -> str:
    """The input's relative path made a file name, or its pseudonym.

    A plain hash of a path holding an identifier (an MRN as folder name) can be recovered by
    hashing every candidate; with a secret ``key`` (HMAC) it cannot without the key.
    """
    if deidentify:
        digest = hmac.new(key, relative.encode(), hashlib.sha256) if key else hashlib.sha256(relative.encode())
        return "cxr_" + digest.hexdigest()[:16]
    stem = relative.rsplit(".", 1)[0] if relative.lower().endswith((".dcm", ".dicom")) else relative
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__"))
