"""Where labels go and how they are written: per-image ``.npz``, manifest, datalist, skip report.

Label files are byte-for-byte reproducible (fixed zip timestamps), written atomically, so a re-run
or a resumed run leaves exactly the files an uninterrupted run would. Each rank records what it
skipped in its own shard file; whichever rank finishes last, once every image is labelled or
skipped, merges them into the final outputs. Each rank also logs the image each of its labels was
made from (path, size, modification time), outside the label files, which stay free of such
machine-specific data.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

import cxrdoll
from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.any_image import IMAGE_FILE_SUFFIXES
from cxrdoll.io import (npz_bytes, read_csv_rows, read_json, relative_output, write_bytes_atomic, write_csv_atomic,
                        write_json_atomic)

SHARD_DIR = ".shards"
CODE_DIR = "code"  # under SHARD_DIR: one record per code version that wrote labels here
REPORT_COLUMNS = ("id", "image", "reason")


def without_image_suffix(name: str) -> str:
    """``name`` without an image file extension (``IMAGE_FILE_SUFFIXES``, any case): 'p1/view1.jpg' ->
    'p1/view1', 'scan.nii.gz' -> 'scan'. Any other last suffix stays: ingest-dicom's ids of files named by UID ('1.2.840.113619.320', no extension)
    differ only there, and all of a series' images would have named one label file."""
    lower = name.lower()
    for suffix in IMAGE_FILE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix) and not name[: -len(suffix)].endswith("/"):
            return name[: -len(suffix)]
    return name


def label_path(out_dir: str | os.PathLike, item_id: str) -> Path:
    """``out_dir/<id without its image extension>.npz``; ids that would escape ``out_dir``, or that no
    file can be named after, are refused (``cxrdoll.io.relative_output``)."""
    rel = relative_output(item_id, "item id")  # checked before the suffix: '..' must not pass as '...npz'
    return Path(out_dir) / relative_output(f"{without_image_suffix(rel.as_posix())}.npz", "item id's label file")


# zlib level of label files. The labeller writes them inline, so the GPU waits: on demo labels
# upsampled to 320 px, level 6 took 20.9 ms for 223 kB a file, level 1 11.7 ms for 235 kB
# (2026-11-30, this repo's 2-core CPU).
LABEL_ZLIB_LEVEL = 1


def write_label(path: str | os.PathLike, mask: np.ndarray, state: np.ndarray, soft: np.ndarray | None = None) -> None:
    """One image's label file (docs/FORMATS.md "DoLL labels"), checked and written atomically.

    Arrays may be numpy or torch. ``mask``: bool, integers (non-zero = inside) or floats holding only
    0 and 1 (soft maps are refused: binarise them first); ``state``: -1, 0 or 1 per channel.
    """
    mask, state = _as_array(mask), _as_array(state)
    soft = None if soft is None else _as_array(soft)
    check_label(path, mask, state, soft)
    if mask.dtype.kind in "fc" and not ((mask == 0) | (mask == 1)).all():
        # astype(uint8) truncated 0.7 to 0: a positive channel written as an empty target.
        raise ValueError(f"{path}: mask holds values other than 0 and 1 ({mask.dtype}); binarise soft maps first "
                         "(cxrdoll.labels.binarise.binarise)")
    if not np.isin(state, (-1, 0, 1)).all():
        raise ValueError(f"{path}: 'state' must be {len(OBSERVATIONS)} values of -1/0/1, got {state.tolist()}")
    # mask != 0, not astype(uint8), which wraps 256 to 0.
    arrays: dict[str, np.ndarray] = {"mask": (mask != 0).astype(np.uint8), "state": state.astype(np.int8)}
    if soft is not None:
        arrays["soft"] = np.clip(soft, 0.0, 1.0).astype(np.float16)
    write_bytes_atomic(path, npz_bytes(arrays, compresslevel=LABEL_ZLIB_LEVEL))



def _as_array(value: Any) -> np.ndarray:
    """numpy view of an array or a (CPU or GPU) torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def check_label(
    path: str | os.PathLike, mask: np.ndarray, state: np.ndarray | None = None, soft: np.ndarray | None = None
) -> None:
    """The shapes of a label (or truth) file's arrays (docs/FORMATS.md), checked on writing and on
    every read, so a wrong file fails naming itself instead of indexing past its channels."""
    n = len(OBSERVATIONS)
    if mask.ndim != 3 or mask.shape[0] != n or mask.shape[1] != mask.shape[2]:
        raise ValueError(f"{path}: mask must be ({n}, S, S), got {mask.shape}")
    if state is not None and state.shape != (n,):
        raise ValueError(f"{path}: state must be ({n},), got {state.shape}")
    if soft is not None and soft.shape != mask.shape:
        raise ValueError(f"{path}: soft {soft.shape} must match mask {mask.shape}")


def read_label(path: str | os.PathLike, keys: Iterable[str] = ("mask", "state", "soft")) -> dict[str, np.ndarray]:
    """Load the requested arrays of a label file (absent optional ones are left out)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in keys if k in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: label file not found") from None
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        # numpy calls any file without its header "pickled data" and suggests loading it unsafely
        reason = "not an .npz archive" if "pickled" in str(err) else str(err)
        raise ValueError(f"{path}: not a readable label file ({reason})") from None


def shard_path(out_dir: str | os.PathLike, rank: int, world_size: int) -> Path:
    return Path(out_dir) / SHARD_DIR / f"rank{rank:04d}-of-{world_size:04d}.json"


def write_shard_record(out_dir: str | os.PathLike, rank: int, world_size: int, skipped: list[dict[str, str]]) -> None:
    """Mark this rank's shard complete, with the inputs it had to skip."""
    write_json_atomic(shard_path(out_dir, rank, world_size), {"rank": rank, "world_size": world_size, "skipped": skipped})


def sources_path(out_dir: str | os.PathLike, rank: int, world_size: int) -> Path:
    return Path(out_dir) / SHARD_DIR / f"sources-rank{rank:04d}-of-{world_size:04d}.jsonl"


def image_source(image: str | os.PathLike) -> dict[str, Any]:
    """The identity of an image file: its path as the datalist gives it, byte size and modification
    time. One ``stat``, cheap for CheXpert's 191K images; new pixels behind the same path change it."""
    st = os.stat(image)
    return {"image": str(image), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def trim_torn_source(path: str | os.PathLike) -> None:
    """Cut off a record that a kill left without its line end, so the next one starts a line of its own.

    Only the rank that appends to ``path`` may call this.
    """
    path = Path(path)
    if path.is_file():
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            os.truncate(path, data.rfind(b"\n") + 1)


def append_source(path: str | os.PathLike, item_id: str, source: dict[str, Any]) -> None:
    """Log the image a label is made from, as one line in the rank's own file, before the label is written.

    So every label on disk has its record; a kill between the two leaves a record without a label,
    whose image the resumed run labels, and records, again. ``recorded_ns`` orders the records of
    one id across the logs of runs with other world sizes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"id": item_id, **source, "recorded_ns": time.time_ns()}) + "\n"
    with open(path, "ab") as fh:
        fh.write(line.encode())


def _source_records(path: Path) -> list[dict[str, Any]]:
    """The records of one log; a last line without its line end (being written, or cut by a kill) is not one yet."""
    lines = path.read_bytes().split(b"\n")[:-1]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise ValueError(f"{path}:{number}: not a source record; delete this file to trust the labels "
                             "it describes, as for a folder labelled before sources were recorded") from None
    return records


def read_sources(out_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The latest source record of each id over every rank's log, of any world size (later lines
    of one log win; across logs, the later ``recorded_ns``)."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted((Path(out_dir) / SHARD_DIR).glob("sources-rank*.jsonl")):
        for item_id, record in {r["id"]: r for r in _source_records(path)}.items():
            if item_id not in latest or record["recorded_ns"] > latest[item_id]["recorded_ns"]:
                latest[item_id] = record
    return latest


def code_version() -> dict[str, Any]:
    """Package version and, when run from a git checkout, the commit: provenance for the manifest."""
    commit = None
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(cxrdoll.__file__).parent, capture_output=True, text=True, timeout=10
        )
        commit = result.stdout.strip() or None if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cxrdoll": cxrdoll.__version__, "git_commit": commit}


def record_code_version(out_dir: str | os.PathLike) -> None:
    """Note the code writing labels into this folder: a resumed run may be a later commit than the
    run that wrote the first labels, and the manifest names every one (``label_code_versions``)."""
    version = code_version()
    key = hashlib.sha256(json.dumps(version, sort_keys=True).encode()).hexdigest()[:16]
    write_json_atomic(Path(out_dir) / SHARD_DIR / CODE_DIR / f"{key}.json", version)


def label_code_versions(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every code version recorded by ``record_code_version`` in this folder, in a fixed order."""
    records = (read_json(p) for p in (Path(out_dir) / SHARD_DIR / CODE_DIR).glob("*.json"))
    return sorted(records, key=lambda v: json.dumps(v, sort_keys=True))


def finalise(
    out_dir: str | os.PathLike,
    sections: dict[str, list[dict]],
    world_size: int,
    manifest: dict[str, Any],
) -> bool:
    """Write report.csv, datalist.json and manifest.json once every image is labelled or skipped.

    Returns False (and writes nothing) while some rank is still running: its record is missing, or
    an image of the datalist has neither a label nor a skip row (a record left by an earlier run
    does not vouch for images this run still has to label). Idempotent: two ranks that finish
    together write the same bytes.
    """
    out_dir = Path(out_dir)
    shard_files = [shard_path(out_dir, r, world_size) for r in range(world_size)]
    if not all(p.exists() for p in shard_files):
        return False
    ids = {item["id"] for items in sections.values() for item in items}
    skipped = sorted((row for p in shard_files for row in read_json(p)["skipped"] if row["id"] in ids),
                     key=lambda r: r["id"])
    skipped_ids = {row["id"] for row in skipped}

    datalist: dict[str, Any] = {"observations": list(OBSERVATIONS)}
    positives = np.zeros(len(OBSERVATIONS), dtype=np.int64)
    negatives = np.zeros(len(OBSERVATIONS), dtype=np.int64)
    n_labelled = 0
    for section, items in sections.items():
        rows = []
        for item in items:
            path = label_path(out_dir, item["id"])
            if not path.exists():
                if item["id"] not in skipped_ids:
                    return False
                continue
            try:
                state = read_label(path, keys=("state",))["state"]
            except ValueError as err:  # damaged after it was written (writes are atomic): label it again
                raise ValueError(f"{err}; delete it and re-run the labeller to label that image again") from None
            positives += state == 1
            negatives += state == 0
            n_labelled += 1
            rows.append({"image": item["image"], "label": str(path.resolve()), "id": item["id"]})
        datalist[section] = rows
    _write_report(out_dir / "report.csv", skipped)
    write_json_atomic(out_dir / "datalist.json", datalist)

    counts = {
        "images": len(ids),
        "labelled": n_labelled,
        "skipped": len(skipped),
        "positives": dict(zip(OBSERVATIONS, positives.tolist())),
        "negatives": dict(zip(OBSERVATIONS, negatives.tolist())),
    }
    write_json_atomic(out_dir / "manifest.json", {**manifest, "counts": counts, "code_version": code_version(),
                                                  "label_code_versions": label_code_versions(out_dir)})
    return True


def _write_report(path: Path, rows: list[dict[str, str]]) -> None:
    write_csv_atomic(path, REPORT_COLUMNS, ([row.get(k, "") for k in REPORT_COLUMNS] for row in rows))


def read_report(path: str | os.PathLike) -> list[dict[str, str]]:
    return read_csv_rows(path)
