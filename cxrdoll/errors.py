"""Which exceptions are the user's mistake, also when a library has wrapped them."""

from __future__ import annotations

import builtins
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Bad input or environment: reported in one line. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)

# torch re-raises an exception from a DataLoader worker as text: "Caught X in DataLoader worker
# process N.\nOriginal Traceback ...", then the formatted chain (causes first), with no __cause__.
_WORKER_TEXT = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s+Original Traceback")
_CHAIN_LINK = re.compile(r"\n\n(?:The above exception was the direct cause of the following exception|"
                         r"During handling of the above exception, another exception occurred):\n\n")
_RAISED_LINE = re.compile(r"^([\w.]+)(?:: (.*))?$", re.DOTALL)


def _raised(section: str) -> tuple[str, str]:
    """Exception name and message of one formatted traceback: what follows its indented frames."""
    lines = section.splitlines()
    for i, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith(("Traceback", "Original Traceback", "Caught ")):
            match = _RAISED_LINE.match("\n".join([line, *lines[i + 1 :]]))
            if match:
                return match.group(1), match.group(2) or ""
    return "", ""


def _worker_user_error(err: BaseException) -> BaseException | None:
    """``user_error`` of a DataLoader worker's exception, read from the traceback text torch passes on.

    As for a live chain, RuntimeError wrappers are walked back to what caused them; a built-in user
    error found there is rebuilt with its message, anything else (a bug) gives None.
    """
    text = str(err.args[0]) if err.args else ""
    if not _WORKER_TEXT.match(text):
        return None
    for section in reversed(_CHAIN_LINK.split(text)):
        name, message = _raised(section)
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, RuntimeError):
            continue
        return cls(message) if isinstance(cls, type) and issubclass(cls, USER_ERRORS) else None
    return None


def user_error(err: BaseException) -> BaseException | None:
    """``err`` if it is a user error, else the first user error behind its chain of RuntimeErrors.

    MONAI reports a bundle's bad datalist, image or checkpoint as a RuntimeError ("Failed to evaluate
    ConfigExpression", "applying transform ...") whose cause names the file; an error in a DataLoader
    worker arrives as traceback text, read by ``_worker_user_error``. None when no user error is
    behind the wrappers (a bug).
    """
    current: BaseException | None = err
    while current is not None:
        worker = _worker_user_error(current)
        if worker is not None:
            return worker
        if not isinstance(current, RuntimeError):
            return current if isinstance(current, USER_ERRORS) else None
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


# A library's words for a cause it does not name, and what to do about it.
_HINTS = {
    "Expected more than 1 value per channel when training": (
        "BatchNorm cannot train on a batch of one image whose deepest feature map is 1x1 (image_size below 64, "
        "and a training set that leaves one image for its last batch): use image_size 64 or more, or a "
        "batch_size that leaves no single image over"),
}


def one_line(err: BaseException) -> str:
    """A user error's text on one line, as the command-line tools print it; KeyError's repr-quoting
    removed, and a hint added to a library message that does not say what to change."""
    blocking = _file_in_place_of_folder(err)
    if blocking is not None:
        return f"{blocking}: is a file, not a folder"
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split()) or type(err).__name__
    hints = [hint for start, hint in _HINTS.items() if text.startswith(start)]
    return f"{text}: {hints[0]}" if hints else text


def _file_in_place_of_folder(err: BaseException) -> str | None:
    """The file standing where ``err`` needed a folder: an output folder (or a folder above it) given as a
    file's path makes mkdir say only "[Errno 17] File exists" or "[Errno 20] Not a directory"."""
    if not isinstance(err, (FileExistsError, NotADirectoryError)):
        return None
    if err.filename is None:
        return None
    path = Path(os.fsdecode(err.filename))
    for candidate in (path, *path.parents) if isinstance(err, FileExistsError) else path.parents:
        if candidate.is_dir():
            return None
        if os.path.lexists(candidate):
            return str(candidate)
    return None


def about_file(path: str, reason: object) -> str:
    """``reason`` on one line, led by the file it is about (unless it already starts with it)."""
    text = " ".join(str(reason).split())
    return text if text.startswith(path) else f"{path}: {text}"


TRACEBACK_VARIABLE = "CXRDOLL_TRACEBACK"  # set to 1 to keep the full traceback of a user error


def show_traceback() -> bool:
    """Whether the user asked for full tracebacks of user errors too (``CXRDOLL_TRACEBACK=1``)."""
    return os.environ.get(TRACEBACK_VARIABLE, "").strip() not in ("", "0")


def brief_user_errors() -> None:
    """End the process with one line for an uncaught user error, as the ``cxrdoll`` commands do.

    ``python -m monai.bundle run`` lets exceptions escape: a missing datalist printed 60 lines of
    traceback ending in MONAI's "Failed to evaluate ConfigExpression", the file and the problem in
    the middle. Every bundle's ``initialize`` installs this hook first. Bugs keep their traceback.
    """
    if getattr(sys.excepthook, "brief_user_errors", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb) -> None:
        cause = None if show_traceback() else user_error(value)
        if cause is None:
            previous(kind, value, tb)
            return
        print(f"error: {one_line(cause)}\n({TRACEBACK_VARIABLE}=1 shows the full traceback)", file=sys.stderr)

    hook.brief_user_errors = True
    sys.excepthook = hook


class OutputWriteError(OSError):
    """An output that could not be written (a full disk, a read-only folder): the run stops, naming
    the file and the cause, rather than reporting the input being written as a bad file.

    Built as ``OutputWriteError(errno, strerror, path)`` (see ``output_error``), so that it pickles
    (it crosses process pools) and reads ``path: strerror``, as the commands print it.
    """

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def output_error(path: str | os.PathLike, err: OSError) -> OutputWriteError:
    """``err``, raised while writing the output ``path``, as an ``OutputWriteError`` naming ``path``
    (not the temporary an atomic write was filling)."""
    if isinstance(err, OutputWriteError):
        return err
    cause = err.strerror or " ".join(str(err).split()) or type(err).__name__
    return OutputWriteError(err.errno, cause, os.fspath(path))


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """An OSError in the block (writing the output ``path``) raised as ``output_error(path, err)``."""
    try:
        yield
    except OSError as err:
        raise output_error(path, err) from err
