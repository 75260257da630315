"""On/off switches of the bundle configs, as they arrive from the command line.

``python -m monai.bundle run --resume false`` hands the config the *string* ``'false'`` (fire
parses only Python's ``False``), and a non-empty string is true: the run would resume, or turn
AMP on, while the user asked for the opposite. Every switch a config reads goes through ``flag``,
and every optional checkpoint path through ``optional_path`` (``--init_ckpt null`` arrives as the
string ``'null'``).
"""

from __future__ import annotations

from typing import Any

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def flag(value: Any, name: str) -> bool:
    """``value`` as a bool: a bool, 0/1, or true/false, yes/no, on/off in any case; else a ValueError naming ``name``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"--{name} {value!r}: expected true or false")


_NONE = frozenset({"", "null", "none"})


def optional_path(value: Any) -> str | None:
    """A checkpoint option: None for None, or for '', null or none in any case (as MONAI's command
    line passes them: ``--pretrained_ckpt null`` gives the string 'null'); else the path as a string."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
        return None
    return str(value)
