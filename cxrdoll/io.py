"""Files: atomic writes (a killed job never leaves a half-written output behind), JSON reads, and
file identities (content hash, and a cheap fingerprint of many files) that decide what may be reused."""

from __future__ import annotations

import csv
import fcntl
import functools
import hashlib
import io
import json
import math
import os
import re
import tempfile
import time
import unicodedata
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from cxrdoll.errors import output_error


_NAME_MAX = 255  # bytes in one path component on Linux and macOS file systems


def relative_output(name: str, what: str) -> PurePosixPath:
    """``name``, taken from input data (a datalist id, a file stem), as a path inside an output folder.

    Refused, naming ``what``: a name that would leave the folder (absolute, ``..``, also between
    Windows' backslashes), name the folder itself (``.``, empty), hold a NUL, or have a part longer
    than a file name can be (255 bytes), which would fail only when its file is written.
    """
    rel = PurePosixPath(str(name).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or "\0" in str(name):
        raise ValueError(f"{what} {name!r} is not a relative path inside the output folder")
    long = [part for part in rel.parts if len(os.fsencode(part)) > _NAME_MAX]
    if long:
        raise ValueError(f"{what} {name!r} has a part longer than a file name can be ({_NAME_MAX} bytes): "
                         f"{long[0][:40]!r}...")
    return rel


FILE_NAME_LIMIT = 200  # characters of a name made by safe_file_name: a suffix ('.nii.gz', a clash's hash) still fits


def safe_file_name(text: str, source: str | None = None) -> str:
    """``text`` (from input data: a path, an id) as one file name any disk takes: runs of characters
    other than ASCII letters, digits, ``.``, ``_`` and ``-`` become ``_``, a leading dot ``_`` (a hidden
    ``.x.abcdefgh.tmp.png`` reads as a killed write's temporary, which is deleted), an empty name ``_``;
    one over ``FILE_NAME_LIMIT`` characters is cut and ends in a hash of ``source`` (default ``text``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    name = "_" + name[1:] if name.startswith(".") else name or "_"
    if len(name) > FILE_NAME_LIMIT:
        digest = hashlib.sha256(os.fsencode(text if source is None else source)).hexdigest()[:16]
        name = f"{name[:FILE_NAME_LIMIT - 17]}_{digest}"
    return name


def same_file_key(name: str) -> str:
    """``name`` as a disk that ignores case and Unicode normalisation sees it (macOS, Windows, SMB
    shares: 'A' and 'a', 'ü' composed or not, are one file): names from input data with equal keys
    would overwrite each other's outputs there."""
    return unicodedata.normalize("NFC", name).casefold()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():  # checked first: the rename would fail naming the temporary file, not ``path``
        raise IsADirectoryError(f"{path}: is a folder; expected the path of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(str(path.parent))
    # the temporary name adds about 14 characters: shorten its stem so that any name the file
    # system takes (255 bytes) can still be written
    stem = path.name.encode()[: _NAME_MAX - 32 - len(path.suffix.encode())].decode(errors="ignore")
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        if err.errno is None or err.filename not in (None, tmp):
            raise  # about another file, which it names
        # the file being written, not the temporary: "OUT/model.pt: No space left on device"; batch jobs
        # stop on it rather than skip an input (cxrdoll.errors.OutputWriteError)
        raise output_error(path, err) from err
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


RUN_LOCK = ".cxrdoll.lock"  # held in an output folder while a run writes there
_HELD_LOCKS: dict[Path, int] = {}  # folder -> open descriptor of its lock file, in this process


def lock_folder(folder: str | os.PathLike, what: str) -> None:
    """Hold ``folder/.cxrdoll.lock`` until ``unlock_folder`` or the end of the process, or refuse.

    Two runs writing one output folder (a job submitted twice) each replace the other's files,
    atomically but unco-ordinated: a model from one run beside the record of the other, or an
    ``--overwrite`` deleting images the other run has listed. A process that holds it already goes on.
    """
    folder = Path(folder).resolve()
    if folder in _HELD_LOCKS:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ValueError(f"{folder}: another {what} is writing here (process {holder}, lock {RUN_LOCK}); wait for "
                         "it to end, or use another folder") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD_LOCKS[folder] = fd


def unlock_folder(folder: str | os.PathLike) -> None:
    """Release ``lock_folder``'s lock (the file stays: removing it would race a process opening it)."""
    fd = _HELD_LOCKS.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)


# atomic_path's temporary names: ".<name>.<8 random characters>.tmp<suffix>"
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]*)?$")
STALE_TEMPORARY_SECONDS = 3600.0


def is_temporary(name: str) -> bool:
    """Whether a file name is one of ``atomic_path``'s temporaries."""
    return _TEMPORARY.match(name) is not None


@functools.cache
def _remove_stale_temporaries(folder: str) -> None:
    """Delete temporaries a killed writer left in ``folder`` (SIGKILL skips the clean-up; an image
    cache's is gigabytes), once per folder and process. Only those untouched for an hour: a write
    in progress, even a long one, keeps modifying its file."""
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if is_temporary(entry.name):
            try:
                if entry.is_file() and now - entry.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                    os.unlink(entry.path)
            except OSError:  # gone already (another process), or not ours to remove
                pass


@functools.cache
def _umask() -> int:
    """The process umask, read once: reading it means setting it, which is not thread-safe, and
    bulk writers (the phantom generator) would pay two system calls per file."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch_atomic(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` written atomically. Serialised in memory first (a copy of the checkpoint in host
    memory, briefly up to twice its size): saved to a file on a full disk, torch raises a C++
    RuntimeError ("unexpected pos ...") naming neither the file nor the cause."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def printable(text: str) -> str:
    """``text`` as UTF-8 can hold it: the bytes of a file name that is not UTF-8 (a Latin-1 folder,
    which Python carries as surrogates, and UTF-8 cannot encode) written as ``\\xfc``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no file name gave (a JSON string's '\\ud800')
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def write_csv_atomic(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV table (header, then rows; ``\\n`` line ends) written atomically: no reader sees half a table.
    File names that are not UTF-8 are written ``printable``: one would fail the whole table."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, printable(buffer.getvalue()))


def read_csv_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """A CSV table written by :func:`write_csv_atomic`, one dict per row keyed by the header."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def as_json(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), for comparing with a file's."""
    return json.loads(json.dumps(value))


def without_nan(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (nested in dicts, lists, tuples) replaced by None.

    Python writes NaN into JSON, but JSON has no NaN (strict readers refuse the file), and NaN
    equals nothing, itself included, so records holding it never compare equal.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: without_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [without_nan(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: Mapping[str, np.ndarray], compresslevel: int | None = None) -> bytes:
    """Compressed ``.npz`` content (loads with ``np.load``) with fixed member timestamps, so equal
    arrays give equal bytes; ``np.savez_compressed`` stamps the current time. ``compresslevel``
    is zlib's (None: its default; 1 is ~3x faster for mostly-zero masks). The arrays come as one
    mapping, so that any name (``compresslevel`` too) is an array's."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            archive.writestr(info, member.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=compresslevel)
    return buffer.getvalue()


def save_npz_atomic(path: str | os.PathLike, /, **arrays: np.ndarray) -> None:
    """Reproducible compressed ``.npz`` written atomically."""
    write_bytes_atomic(path, npz_bytes(arrays))


def save_png_atomic(path: str | os.PathLike, array: np.ndarray, compress_level: int = 6) -> None:
    """8-bit or 16-bit greyscale PNG, written atomically.

    ``compress_level`` is zlib's (6: Pillow's default); 1 encodes several times faster for a file
    a little larger, which suits bulk-written masks and images.
    """
    from PIL import Image

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG", compress_level=compress_level)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except UnicodeDecodeError:  # an image or other binary file given for a JSON one
        raise ValueError(f"{path}: not JSON text (not UTF-8; a binary file?)") from None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes: the identity of a checkpoint or datalist, also when it is rewritten in place."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def optional_file_sha256(path: str | os.PathLike | None) -> str | None:
    """``file_sha256``, or None for a checkpoint a run was started without (a run record's field)."""
    return None if path is None else file_sha256(path)


def files_fingerprint(paths: Iterable[str | os.PathLike], header: str = "", what: str = "file") -> str:
    """sha256 over ``header`` and each path with its byte size and modification time, in order.

    Cheap for 191K images (one ``stat`` each, no reads), and it changes when a file is added, removed,
    reordered, or rewritten in place. A missing file raises ``FileNotFoundError`` naming it as ``what``.
    """
    digest = hashlib.sha256(header.encode())
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: {what} not found") from None
        digest.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
