"""The deploy app's settings, checked before any model or image is loaded (no SDK needed).

Each check fails with one line naming the variable or folder and what is allowed, instead of the
error torch or the SDK would give much later (``could not convert string to float``, a CUDA
deserialisation error, ``No study loaded from path``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from cxrdoll.dicom.ingest import dicom_input_folder

DEVICE_VARIABLE = "CXR_DEVICE"
THRESHOLD_VARIABLE = "CXR_THRESHOLD"
_DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")
# the input folder the MONAI Deploy SDK assumes when the app is given none
SDK_DEFAULT_INPUT = "input"


@dataclass(frozen=True)
class AppSettings:
    """What the environment asks of the app: the torch device and the mask threshold."""

    device: str = "cpu"
    threshold: float = 0.5


def settings_from_env(env: Mapping[str, str] = os.environ) -> AppSettings:
    """``CXR_DEVICE`` and ``CXR_THRESHOLD``, checked; unset ones keep their defaults."""
    defaults = AppSettings()
    return AppSettings(
        device=parse_device(env.get(DEVICE_VARIABLE, defaults.device)),
        threshold=parse_threshold(env.get(THRESHOLD_VARIABLE, str(defaults.threshold))),
    )


def parse_threshold(text: str) -> float:
    """A probability strictly between 0 and 1: 0 would mark every pixel, 1 none."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:  # also rejects nan
        raise ValueError(f"{THRESHOLD_VARIABLE} must be a number in (0, 1), e.g. 0.5; got {text!r}")
    return value


def parse_device(text: str, name: str = DEVICE_VARIABLE) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` that this machine has; checked here because torch would only
    fail while deserialising the model, with advice about ``torch.load`` that does not apply.
    ``name`` is the setting the messages name."""
    device = text.strip()
    if not _DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"{name} must be cpu, cuda or cuda:N; got {text!r}")
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"{name}={device}: no CUDA device is available on this machine; use cpu")
    index = torch.device(device).index or 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"{name}={device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def check_input_folder(path: str | os.PathLike) -> Path:
    """``path`` if it is a folder holding at least one file (searched recursively), as the loader reads it.

    An empty folder is refused up front: the SDK's loader would end in a traceback, and a run with
    nothing to read would replace the report of an earlier run with an empty one.
    """
    if str(path) == SDK_DEFAULT_INPUT and not Path(path).exists():  # neither -i nor HOLOSCAN_INPUT_PATH given
        raise FileNotFoundError(f"no input folder: give one with -i DICOM_DIR (or HOLOSCAN_INPUT_PATH); the SDK's "
                                f"default {SDK_DEFAULT_INPUT!r} does not exist here")
    folder = dicom_input_folder(Path(path))
    if not any(p.is_file() for p in folder.rglob("*")):
        raise ValueError(f"{folder}: input folder holds no files (searched recursively); nothing to do")
    return folder
