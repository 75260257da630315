"""argparse ``type=`` functions shared by the commands: a bad value is a usage error naming its option
(exit code 2) while parsing, not a failure deep inside a bundle run under the bundle's own id."""

from __future__ import annotations

import argparse
import math
from typing import Callable, TypeVar

T = TypeVar("T")


def _whole_number(text: str, minimum: int, wording: str) -> int:
    """``text`` as an int of at least ``minimum``; otherwise "'<text>' is not <wording>"."""
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is not {wording}")
    return value


def positive_int(text: str) -> int:
    """argparse type: epochs, batch and epoch sizes of 0 would fail deep inside the training."""
    return _whole_number(text, 1, "a positive whole number")


def non_negative_int(text: str) -> int:
    """argparse type: a count where 0 means none (data loader processes: 0 loads in the main process)."""
    return _whole_number(text, 0, "a whole number >= 0")


def positive_float(text: str) -> float:
    """argparse type: a learning rate of 0, below 0 or nan trains nothing useful (and nan never equals
    its stored copy, so its runs would retrain on every call)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def fraction(text: str) -> float:
    """argparse type: a share in [0, 1), such as a validation fraction (1 would leave nothing to train on)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in [0, 1)")
    return value


def comma_list(text: str, item: Callable[[str], T], what: str, *, distinct: bool = True) -> list[T]:
    """The items of a comma list, each read by ``item`` (a ValueError or ArgumentTypeError is
    "'<part>' in '<text>' is not <what>"), as an argparse type: argparse puts the option before the
    message. ``distinct``: a repeated item is refused (a seed or size given twice would count one run
    twice in the mean and sd over it)."""
    values: list[T] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = item(part)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"{part!r} in {text!r} is not {what}") from None
        if distinct and value in values:
            raise argparse.ArgumentTypeError(f"{part!r} is given twice in {text!r}")
        values.append(value)
    return values


def positive_int_list(text: str) -> list[int]:
    """argparse type: ``"256,128,64"`` -> ``[256, 128, 64]`` (channel counts; repeats allowed)."""
    return comma_list(text, positive_int, "a positive whole number", distinct=False)


def image_size(text: str, *, whole_strides: bool = False) -> int:
    """argparse type: a side the networks take (``whole_strides``: a multiple of the deepest stride, for
    the segmenter), which would otherwise fail only once the bundle has started."""
    from cxrdoll.networks import checked_image_size

    try:
        return checked_image_size(text, whole_strides=whole_strides)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def segmenter_image_size(text: str) -> int:
    """argparse type: ``image_size`` for the segmentation network (a multiple of its deepest stride)."""
    return image_size(text, whole_strides=True)
