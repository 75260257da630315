"""Writing label-quality truth files (docs/FORMATS.md): what prepare-chexlocalize and prepare-nih-boxes share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.io import save_npz_atomic


def _earlier_truth(folder: Path) -> list[Path]:
    """Truth files already under ``folder``: those label-quality would read (``index_npz``), so a
    macOS ``._x.npz`` beside them is neither refused as earlier truth nor removed by ``overwrite``."""
    from cxrdoll.labels.quality import index_npz  # torch: not for --help

    return sorted(index_npz(folder).values()) if folder.is_dir() else []


def write_truth_files(out_dir: str | os.PathLike, folder: Path,
                      truths: Sequence[tuple[str, Callable[[], dict[str, np.ndarray]]]], *, desc: str,
                      overwrite: bool, progress: bool | None) -> np.ndarray:
    """Write each ``(datalist id, arrays)`` of ``truths`` where the labeller writes that id's label
    (``label_path(out_dir, id)``), atomically; ``arrays`` is called only then, so one image's masks are in
    memory at a time. Returns ``(14,)``: per channel, the images whose mask is non-empty there.

    Truth files already under ``folder`` are refused unless ``overwrite``, which removes them first:
    label-quality reads every ``.npz`` under ``--truth``, so another run's leftover images would be scored
    as truth. ``progress``: a bar (None: only on a terminal).
    """
    from cxrdoll.labels.writer import label_path  # torch, through the image readers: not for --help

    earlier = _earlier_truth(folder)
    if earlier and not overwrite:
        example = earlier[0].relative_to(folder)
        raise ValueError(f"{folder}: already holds {len(earlier)} truth file(s) (e.g. {example}); pass --overwrite to "
                         "replace them, or choose another --out")
    for path in earlier:
        path.unlink()
    non_empty = np.zeros(len(OBSERVATIONS), np.int64)
    hide = None if progress is None else not progress  # tqdm's disable: None hides it off a terminal
    for item_id, arrays in tqdm(truths, unit="img", desc=desc, disable=hide):
        content = arrays()
        save_npz_atomic(label_path(out_dir, item_id), **content)
        non_empty += content["mask"].reshape(len(OBSERVATIONS), -1).any(axis=1)
    return non_empty


def summary(written: int, folder: Path, note: str, seconds: float, counted: str, counts: dict[str, int]) -> str:
    """The one line a prepare command prints: files, where, ``note`` (after the folder), time, ``counted`` per
    observation."""
    return (f"wrote {written} truth files to {folder}{note} in {seconds:.1f} s; {counted}: "
            + ", ".join(f"{obs} {n}" for obs, n in counts.items()))
