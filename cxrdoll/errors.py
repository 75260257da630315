"""Which exceptions are the user's mistake, also when a library has wrapped them."""

from __future__ import annotations

# Bad input or environment: reported in one line. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)


def user_error(err: BaseException) -> BaseException | None:
    """``err`` if it is a user error, else the first user error behind its chain of RuntimeErrors.

    MONAI reports a bundle's bad datalist, image or checkpoint as a RuntimeError ("Failed to evaluate
    ConfigExpression", "applying transform ...") whose cause names the file; None when no user error
    is behind the wrappers (a bug).
    """
    while isinstance(err, RuntimeError):
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return err if isinstance(err, USER_ERRORS) else None


def one_line(err: BaseException) -> str:
    """A user error's text on one line, as the command-line tools print it; KeyError's repr-quoting removed."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(text.split()) or type(err).__name__


def about_file(path: str, reason: object) -> str:
    """``reason`` on one line, led by the file it is about (unless it already starts with it)."""
    text = " ".join(str(reason).split())
    return text if text.startswith(path) else f"{path}: {text}"
