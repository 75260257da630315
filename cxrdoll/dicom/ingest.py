"""Turn a folder of clinical DICOM files into normalised images, a MONAI datalist and a report.

Privacy: patient names and IDs are never read into the outputs or printed. With ``deidentify``,
output names are pseudonyms (a hash of the input path, keyed with ``pseudonym_key``), outputs are
listed in pseudonym order (not in the archive's path order), neither input paths nor DICOM UIDs are
written or printed (pydicom's warnings quote element values, so they are silenced), and images
marked ``BurnedInAnnotation`` YES are skipped.

An archive of 224K radiographs takes a day in one process (1.3 s per 3000x2500 CR), so files are
read in worker processes, and every finished file is appended to ``ingest_journal.jsonl``: a killed
run, started again with the same settings, goes on from where it stopped. The journal is removed
once the datalist and report are written.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import itertools
import json
import logging
import multiprocessing
import os
import signal
import sys
import warnings
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from cxrdoll.data.datalist import write_datalist
from cxrdoll.dicom.loader import CXRImage, DicomInputError, check_cxr, dataset_to_image, read_dataset
from cxrdoll.dicom.views import is_usable_frontal, view_position
from cxrdoll.errors import OutputWriteError, writing
from cxrdoll.io import (is_temporary, lock_folder, printable, read_csv_rows, safe_file_name, save_png_atomic,
                        unlock_folder, write_bytes_atomic, write_csv_atomic, write_text_atomic)

FORMATS: tuple[str, ...] = ("png", "nifti")
REPORT_COLUMNS: tuple[str, ...] = (
    "file", "status", "reason", "output", "modality", "view", "photometric", "voi", "rows", "cols",
)
JOURNAL = "ingest_journal.jsonl"  # a run's finished files, until its datalist and report are written
# zlib level of the written PNGs: on a 1955x1841 CR, 6 (Pillow's default) took 500 ms and 1.28 MB,
# 3 took 128 ms and 1.43 MB (2026-11-30, this repo's 2-core CPU)
PNG_LEVEL = 3


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


@dataclass(frozen=True)
class _Job:
    """One input file and the names it is given (decided in the parent, in sorted path order)."""

    path: Path
    name: str
    shown: str  # how the report names the input: its relative path, or its pseudonym


_Args = tuple[_Job, Path, IngestOptions]  # what a reading process is given
_Result = tuple[ReportRow, dict | None, str]  # report row, datalist item (None: skipped), SOP Instance UID
_Reader = Callable[[_Args], _Result]


def ingest_folder(in_dir: str | Path, out_dir: str | Path, options: IngestOptions,
                  overwrite: bool = False, workers: int = 0, progress: bool | None = False) -> list[ReportRow]:
    """Ingest every file under ``in_dir`` (recursively); one bad file never stops the batch.

    An output that cannot be written (a full disk, a read-only folder) does: ``OutputWriteError``
    names it and the cause, and nothing is journaled for the file being written, so the same call
    once the problem is fixed resumes and ends as an uninterrupted run would.

    An ``out_dir`` holding an earlier run's outputs is refused unless ``overwrite``, which removes
    them first: images rewritten in place under the old datalist (a killed re-run at another size)
    or left over from it (identifiable names beside a ``deidentify`` run's pseudonyms) mix two runs.
    Files in ``images/`` that no earlier report or journal lists are refused, never deleted. A killed
    run's journal is resumed when the settings match. ``workers`` processes read the files (0: this
    process); the outputs do not depend on their number. ``progress``: a bar (None: only on a terminal).
    """
    in_dir, out_dir = dicom_input_folder(Path(in_dir).resolve()), Path(out_dir).resolve()
    if options.fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {options.fmt!r}")
    if options.views not in ("frontal", "all"):
        raise ValueError(f"views must be 'frontal' or 'all', got {options.views!r}")
    files = _files_under(in_dir, exclude=out_dir)
    if not files:  # writing an empty datalist and report would replace the outputs of an earlier run
        raise ValueError(f"{in_dir}: no files found (searched recursively); nothing written")
    lock_folder(out_dir, "ingest-dicom run")  # a second run's --overwrite deleted the images of the first
    try:
        return _ingest(in_dir, out_dir, files, options, overwrite, workers, progress)
    finally:
        unlock_folder(out_dir)


def _ingest(in_dir: Path, out_dir: Path, files: list[Path], options: IngestOptions, overwrite: bool, workers: int,
            progress: bool | None) -> list[ReportRow]:
    """``ingest_folder`` once its inputs are checked and its output folder is this run's alone."""
    jobs = _plan(files, in_dir, options)
    header = _journal_header(in_dir, options)
    by_name = {job.name: job for job in jobs}
    done = _clear_earlier_outputs(out_dir, overwrite, header, set(by_name))
    # a file changed (or gone) since the killed run journaled it is ingested again (or left out), and
    # the image it gave is removed: no report would list it
    kept = {name: entry for name, entry in done.items()
            if name in by_name and entry["stat"] == _fingerprint(by_name[name].path, options)}
    for name, entry in done.items():
        if name not in kept and entry.get("item"):
            Path(entry["item"]["image"]).unlink(missing_ok=True)
    done = kept
    seen_uids = {entry["uid"]: entry["row"]["file"] for entry in done.values() if entry["uid"] and entry["item"]}
    todo = [job for job in jobs if job.name not in done]
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    journal = out_dir / JOURNAL
    if journal.is_file():  # resumed: its last line may be one a kill or a full disk cut short
        with writing(journal):
            _trim_journal(journal)
    else:
        with writing(journal):
            write_text_atomic(journal, json.dumps(header) + "\n")
    hide = None if progress is None else not progress  # tqdm's disable: None hides it off a terminal
    with writing(journal):
        log = os.open(journal, os.O_WRONLY | os.O_APPEND)
    try:
        with tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="file", desc="ingest-dicom",
                  disable=hide) as bar:
            _run_jobs(todo, done, seen_uids, out_dir, options, workers, journal, log, bar)
    finally:
        os.close(log)
    for path in (out_dir / "images").iterdir():  # half-written by a process killed mid-write (this run's or one before)
        if is_temporary(path.name):
            path.unlink()
    rows = [ReportRow(**done[job.name]["row"]) for job in jobs]
    items = [done[job.name]["item"] for job in jobs if done[job.name]["item"] is not None]
    datalist = {"format": options.fmt, "size": options.size, "voi": options.voi, "training": items}
    if not options.deidentify:
        datalist["source"] = str(in_dir)
    with writing(out_dir / "datalist.json"):
        write_datalist(out_dir / "datalist.json", datalist)
    with writing(out_dir / "report.csv"):
        write_report(out_dir / "report.csv", rows)
    journal.unlink()
    return rows


def _run_jobs(todo: list[_Job], done: dict[str, dict], seen_uids: dict[str, str], out_dir: Path,
              options: IngestOptions, workers: int, journal: Path, log: int, bar: tqdm) -> None:
    """Ingest ``todo``, journaling each finished file to ``log`` (``journal``'s descriptor) and in ``done``."""
    for job, (row, item, uid) in zip(todo, _map_jobs(todo, out_dir, options, workers)):
        token = _uid_token(uid, options.pseudonym_key) if uid else ""
        if item is not None and token and token in seen_uids and not options.keep_duplicates:
            Path(item["image"]).unlink()
            row, item = ReportRow(job.shown, "skipped", f"duplicate SOP Instance UID of {seen_uids[token]}"), None
        if item is not None and token:
            seen_uids.setdefault(token, job.shown)
        done[job.name] = {"name": job.name, "stat": _fingerprint(job.path, options), "row": asdict(row), "item": item,
                          "uid": token}
        with writing(journal):
            _append(log, (json.dumps(done[job.name]) + "\n").encode())
        bar.update()


def _append(fd: int, data: bytes) -> None:
    """``data`` appended with unbuffered writes: a full disk raises here, never later from a buffer
    flushed on close; what it cut short is the torn last line ``_trim_journal`` removes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _trim_journal(path: Path) -> None:
    """Cut off what ``_read_journal`` does not read, before a resumed run appends: a last line without
    its line end (a kill or a full disk mid-write) and anything from the first unparsable line on.
    Appended to, the first new entry would be glued to the torn line and lost with it."""
    data = path.read_bytes()
    kept = 0
    for line in data.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                break
            json.loads(line)
        except ValueError:
            break
        kept += len(line)
    if kept < len(data):
        os.truncate(path, kept)


def _plan(files: list[Path], in_dir: Path, options: IngestOptions) -> list[_Job]:
    """Each file's output name and report name, in sorted path order (which decides name clashes).

    With ``deidentify`` the jobs come in pseudonym order: rows in path order would line up with a
    listing of the archive (sorted MRN folders), key or no key.
    """
    jobs, owners = [], {}  # output name (lower case) -> the input it was given to
    for path in files:
        relative = path.relative_to(in_dir).as_posix()
        name = _unused_name(_output_name(relative, options.deidentify, options.pseudonym_key), relative, owners)
        owners[name.lower()] = relative
        jobs.append(_Job(path, name, name if options.deidentify else printable(relative)))
    return sorted(jobs, key=lambda job: job.name) if options.deidentify else jobs


def _unused_name(name: str, relative: str, owners: dict[str, str]) -> str:
    """``name``, or when another input has it (in any case: 'Müller/1.dcm' and 'Möller/1.dcm' both
    sanitise to 'M_ller__1') ``name`` with a hash of ``relative``, then a number: the hashed name may
    be one an input was given already ('a__b <hash>'), and two jobs of one name overwrite each other."""
    candidate = f"{name}_{hashlib.sha256(os.fsencode(relative)).hexdigest()[:8]}" if name.lower() in owners else name
    number = 1
    while candidate.lower() in owners:
        number += 1
        candidate = f"{name}_{hashlib.sha256(os.fsencode(relative)).hexdigest()[:8]}_{number}"
    return candidate


def _fingerprint(path: Path, options: IngestOptions) -> list[int] | str | None:
    """Size and modification time of an input, journaled to tell a file changed since. With
    ``deidentify`` only their hash (keyed like the pseudonyms): the pair would fingerprint the file."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not options.deidentify:
        return [st.st_size, st.st_mtime_ns]
    return _uid_token(f"{st.st_size}:{st.st_mtime_ns}", options.pseudonym_key)


def _uid_token(uid: str, key: bytes | None) -> str:
    """What the journal keeps of a SOP Instance UID (or a deidentified file's size and time): never
    the value itself."""
    digest = hmac.new(key, uid.encode(), hashlib.sha256) if key else hashlib.sha256(uid.encode())
    return digest.hexdigest()[:32]


def _journal_header(in_dir: Path, options: IngestOptions) -> dict[str, Any]:
    """The settings a journal was written under: a killed run resumes only under the same ones."""
    settings = {k: v for k, v in asdict(options).items() if k != "pseudonym_key"}
    key = options.pseudonym_key
    settings["pseudonym_key"] = hmac.new(key, b"cxrdoll ingest", hashlib.sha256).hexdigest()[:16] if key else None
    settings["source"] = None if options.deidentify else str(in_dir)
    return {"journal": 1, "settings": settings}


def _read_journal(path: Path) -> tuple[dict[str, Any] | None, dict[str, dict]]:
    """Header and entries of a journal, up to a line cut short by a kill or a full disk: one without its
    line end (even one that parses, cut just before it: ``_trim_journal`` removes it) or that does not parse."""
    records = []
    for line in path.read_bytes().splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    header = records[0] if records and "journal" in records[0] else None
    return header, {r["name"]: r for r in records[1:] if isinstance(r, dict) and "name" in r}


def _clear_earlier_outputs(out_dir: Path, overwrite: bool, header: dict[str, Any],
                           names: set[str]) -> dict[str, dict]:
    """Refuse, or with ``overwrite`` remove, what an earlier ingest wrote in ``out_dir``: the files its
    ``report.csv`` or journal lists, then its report, datalist and journal. A killed run's journal
    written under this run's settings is resumed instead: its entries are returned. Anything else in
    ``images/`` (files that are not ingest's) is never deleted: it is refused before anything is,
    except the images a killed run wrote for files it had not yet journaled."""
    report, images, journal = out_dir / "report.csv", out_dir / "images", out_dir / JOURNAL
    earlier = [name for name in ("datalist.json", "report.csv") if (out_dir / name).exists()]
    present = sorted(p for p in images.rglob("*") if p.is_file() and not is_temporary(p.name)) if images.is_dir() \
        else []
    stored, entries = _read_journal(journal) if journal.is_file() else (None, {})
    if not earlier and not present and not journal.exists():
        return {}
    if earlier and not overwrite:
        raise ValueError(f"{out_dir}: already holds {', '.join(earlier)} from an earlier run; pass --overwrite to "
                         "replace that run's outputs, or choose another --out")
    resume = journal.exists() and not earlier and not overwrite
    if resume and stored != header:
        theirs = (stored or {}).get("settings", {})
        differ = ", ".join(f"{k}={theirs.get(k)!r}, not {v!r}" for k, v in header["settings"].items()
                           if theirs.get(k) != v) or "an unreadable header"
        raise ValueError(f"{journal}: a killed ingest run with other settings ({differ}); run again with its "
                         "settings to resume it, or pass --overwrite to start over")
    rows = read_csv_rows(report) if report.is_file() else []
    listed = {(out_dir / row["output"]).resolve() for row in rows if row.get("output")}
    listed |= {Path(e["item"]["image"]).resolve() for e in entries.values() if e.get("item")}
    # a killed run's last images, written before it could journal them, carry names this run gives
    unlisted = [p for p in present if p.resolve() not in listed and not (journal.exists() and _stem(p) in names)]
    if unlisted:  # a deidentified run names none: an earlier run's names may be identifying paths
        example = "" if header["settings"]["deidentify"] else f"e.g. {unlisted[0].name}: "
        raise ValueError(f"{images}: holds {len(unlisted)} file(s) that no ingest report or journal in {out_dir} "
                         f"lists ({example}a killed run's, or not ingest's); move them or choose another --out")
    if resume:
        return entries
    for path in present:
        path.unlink()
    for name in [*earlier, *([JOURNAL] if journal.exists() else [])]:
        (out_dir / name).unlink()
    return {}


def _stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem


def write_report(path: Path, rows: Iterable[ReportRow]) -> None:
    write_csv_atomic(path, REPORT_COLUMNS, ([asdict(row)[k] for k in REPORT_COLUMNS] for row in rows))


def _map_jobs(jobs: list[_Job], out_dir: Path, options: IngestOptions, workers: int) -> Iterator[_Result]:
    """``_ingest_job`` over ``jobs``, results in job order: in this process when ``workers`` is 0, else in
    ``workers`` processes.

    A file whose reading kills its process (a decoder's segfault or ``exit()`` on a corrupt stream)
    breaks the pool and every file then in flight. Those files are read again, each in a process of
    its own (``workers`` at a time), so that the one that dies again is skipped with how it ended in
    the report, and the batch goes on in a new pool. In this process (0) there is no such guard.
    Processes are spawned, not forked: a fork of a process that has run torch's OpenMP threads can
    hang in them.
    """
    args = [(job, out_dir, options) for job in jobs]
    if workers == 0:
        yield from map(_ingest_job, args)
        return
    reader: _Reader = _ingest_job  # looked up once: the processes reading files alone must run the same one
    start = 0
    while start < len(args):
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_one_thread)
        in_flight: deque[Future] = deque()
        try:
            submitted = start
            while start < len(args):
                while submitted < len(args) and len(in_flight) < 2 * workers:  # every process kept fed
                    in_flight.append(pool.submit(reader, args[submitted]))
                    submitted += 1
                result = in_flight[0].result()
                in_flight.popleft()
                start += 1
                yield result
        except BrokenProcessPool:
            pass
        finally:  # stopped early (Ctrl-C, an error, a dead process): the files not yet started are not waited for
            pool.shutdown(cancel_futures=True)
        # only when the pool broke: the results that came in are kept, the other files are read again alone
        alone = _ingest_each_alone(reader, [args[start + i] for i, f in enumerate(in_flight) if not _succeeded(f)],
                                   workers)
        for future in in_flight:
            yield future.result() if _succeeded(future) else next(alone)
            start += 1


def _succeeded(future: Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _ingest_each_alone(reader: _Reader, jobs: list[_Args], workers: int) -> Iterator[_Result]:
    """``reader`` over ``jobs``, each in a process of its own, ``workers`` at a time, results in job
    order: a file that kills its process now kills only its own, and is skipped, saying how it ended."""
    context = multiprocessing.get_context("spawn")

    def start(args: _Args) -> tuple[_Args, Any, Connection]:
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_send_result, args=(reader, args, send), daemon=True)
        process.start()
        send.close()
        return args, process, receive

    waiting = iter(jobs)
    running = deque(start(args) for args in itertools.islice(waiting, workers))
    while running:
        args, process, receive = running.popleft()
        try:
            result = receive.recv()
        except EOFError:  # it died before sending
            result = None
        finally:
            receive.close()
        process.join()
        if isinstance(result, OutputWriteError):  # the run stops; as a pool's shutdown, the started ones finish
            for _, other, pipe in running:
                other.join()
                pipe.close()
            raise result
        following = next(waiting, None)
        if following is not None:
            running.append(start(following))
        yield result if result is not None else _died(args[0], process.exitcode)


def _died(job: _Job, code: int) -> _Result:
    """The report row of a file whose reading ended its process without a result."""
    try:
        how = signal.Signals(-code).name if code < 0 else f"exit code {code}"
    except ValueError:
        how = f"signal {-code}"
    reason = f"the process reading it died ({how}): a corrupt file, a decoder bug or too little memory"
    return ReportRow(job.shown, "skipped", reason), None, ""


def _send_result(reader: _Reader, args: _Args, send: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent; it must not read as this file's death
    _one_thread()
    try:
        result: _Result | OutputWriteError = reader(args)
    except OutputWriteError as err:  # sent, to be raised in the parent: it is not this file's death
        result = err
    send.send(result)
    send.close()


def _one_thread() -> None:
    """Worker processes resize with one torch thread each: the parallelism is across files. torch is
    imported only to resize (seconds per worker), so mostly it is told through the environment."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    else:
        os.environ["OMP_NUM_THREADS"] = "1"


def _ingest_job(args: _Args) -> _Result:
    """Report row, datalist item (None when skipped) and SOP Instance UID of one file."""
    job, out_dir, options = args
    try:
        with _silenced(options.deidentify):
            return _ingest_one(job.path, job.name, out_dir, options, job.shown)
    except DicomInputError as err:
        return ReportRow(job.shown, "skipped", _without_path(err.problem, job)), None, ""
    except OutputWriteError:  # a full disk is not a bad input: the run stops, and this file is not journaled
        raise
    except Exception as err:  # an unexpected failure of one file must not stop the batch
        return ReportRow(job.shown, "skipped", _without_path(f"{type(err).__name__}: {err}", job)), None, ""


def _without_path(reason: str, job: _Job) -> str:
    """``reason`` naming the input as the report does: an OSError quotes the path as its repr."""
    return reason.replace(repr(str(job.path)), repr(job.shown)).replace(str(job.path), job.shown)


@contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """With ``quiet``, no warning or log line while a file is read: pydicom's quote element values
    (an invalid SOP Instance UID, a name), from loggers under ``pydicom`` and as warnings."""
    if not quiet:
        yield
        return
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)


def _ingest_one(path: Path, name: str, out_dir: Path, options: IngestOptions,
                shown: str) -> tuple[ReportRow, dict | None, str]:
    ds = read_dataset(path)
    uid = str(ds.get("SOPInstanceUID", "") or "")
    check_cxr(ds, shown)
    view, view_source = view_position(ds)
    # From the header, so that an image skipped for its view or flag is never decoded: laterals are
    # about a third of a chest archive, and a burned-in image's pixels stay unread.
    described = dict(
        modality=str(ds.Modality), view=view, photometric=str(ds.PhotometricInterpretation),
        rows=int(ds.get("Rows", 0) or 0) or "", cols=int(ds.get("Columns", 0) or 0) or "",
    )
    if options.views == "frontal" and not is_usable_frontal(view):
        reason = f"not a frontal view ({view} from {view_source})"
        return ReportRow(shown, "skipped", reason, **described), None, uid
    if options.deidentify and str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        reason = "BurnedInAnnotation is YES: its pixels may show identifying text, so it is not written with --deidentify"
        return ReportRow(shown, "skipped", reason, **described), None, uid
    image = dataset_to_image(ds, voi=options.voi, source=shown)
    meta = image.meta
    described.update(rows=meta["original_shape"][0], cols=meta["original_shape"][1])
    output = _write_image(image, out_dir / "images", name, options)
    item = {
        "image": str(output),
        "id": name,
        "modality": meta["modality"],
        "view": meta["view"],
        "pixel_spacing": _resized_spacing(meta, image.array.shape[1:], options.size),
    }
    return ReportRow(shown, "ok", "", str(output.relative_to(out_dir)), voi=meta["voi"], **described), item, uid


def _write_image(image: CXRImage, folder: Path, name: str, options: IngestOptions) -> Path:
    """The image's output file, written atomically; an OSError while writing it is an ``OutputWriteError``."""
    array = image.array[0]
    if options.size:
        array = _resize_area(array, options.size)
    if options.fmt == "png":
        path = folder / f"{name}.png"
        # 8-bit, as load_image_transforms expects (it scales 0..255 to [0, 1]).
        with writing(path):
            save_png_atomic(path, np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8),
                            compress_level=PNG_LEVEL)
        return path
    import nibabel as nib

    path = folder / f"{name}.nii.gz"
    spacing = _resized_spacing(image.meta, image.array.shape[1:], options.size) or [1.0, 1.0]
    affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
    nifti = nib.Nifti1Image(array.astype(np.float32), affine)
    data = gzip.compress(nifti.to_bytes(), compresslevel=6)
    with writing(path):
        write_bytes_atomic(path, data)
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
        digest = hmac.new(key, os.fsencode(relative), hashlib.sha256) if key else hashlib.sha256(os.fsencode(relative))
        return "cxr_" + digest.hexdigest()[:16]
    stem = relative.rsplit(".", 1)[0] if relative.lower().endswith((".dcm", ".dicom")) else relative
    return safe_file_name(stem.replace("/", "__"), relative)  # UID folders joined can pass 255 bytes
