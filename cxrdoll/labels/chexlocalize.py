"""CheXlocalize's radiologist segmentations (Saporta et al. 2022) as truth files for label quality.

``gt_segmentations_{val,test}.json`` maps a CXR id (``patient64622_study1_view1_frontal``) to its 10
pathologies, each a COCO compressed RLE (``{"size": [h, w], "counts": str}``, column-major; all zero
where the image lacks the finding). Each image becomes ``OUT/<prefix>/<patient>/<study>/<view>.npz``,
the path at which the labeller writes the label of the datalist id ``<prefix>/<patient>/<study>/<view>.jpg``
(CheXpert's CSV ``Path``), so ``label-quality`` pairs them. The 4 observations CheXlocalize does not
outline (No Finding, Pneumonia, Pleural Other, Fracture) are left out of ``annotated``: their truth is
unknown, not empty.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.io import read_json, relative_output
from cxrdoll.labels.truth_files import write_truth_files

# CheXlocalize's pathology name -> its channel's observation; early releases say 'Airspace Opacity'
CHANNELS: dict[str, str] = {
    **{name: name for name in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
                               "Lung Lesion", "Lung Opacity", "Pleural Effusion", "Pneumothorax", "Support Devices")},
    "Airspace Opacity": "Lung Opacity",
}
DEFAULT_PREFIX = "CheXpert-v1.0-small/valid"
VIEWS = ("frontal", "all")
_CXR_ID = re.compile(r"(patient\d+)_(study\d+)_(view\d+_(frontal|lateral))")


@dataclass(frozen=True)
class CxrSegmentations:
    """One image of the JSON, checked: its datalist id, view (frontal or lateral), size ``(h, w)`` and RLE per
    channel."""

    key: str
    item_id: str
    view: str
    size: tuple[int, int]
    rles: dict[int, dict[str, Any]]


def _checked_size(source: Path, key: str, name: str, value: Any) -> tuple[int, int]:
    """One segmentation's ``(h, w)``, once its RLE is known to cover exactly that many pixels."""
    size = value.get("size") if isinstance(value, dict) else None
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ValueError(f"{source}: {key!r}, {name!r}: expected {{'size': [h, w], 'counts': ...}} with positive "
                         f"h and w, got size {size!r}")
    counts = value.get("counts")
    if not isinstance(counts, str):
        raise ValueError(f"{source}: {key!r}, {name!r}: 'counts' must be a compressed RLE string (pycocotools)")
    pixels = rle_pixels(counts)
    if pixels != size[0] * size[1]:
        covers = "is not a compressed RLE" if pixels < 0 else f"covers {pixels} pixels"
        raise ValueError(f"{source}: {key!r}, {name!r}: 'counts' {covers}, not the {size[0]} x {size[1]} of its size")
    return size[0], size[1]


def rle_pixels(counts: str) -> int:
    """Pixels a COCO compressed RLE string covers (pycocotools' ``rleFrString``, summed), or -1 if it is
    not one. pycocotools decodes without checking it against the size: short counts leave pixels of
    uninitialised memory in the mask, long ones write past its end."""
    if not counts.isascii():
        return -1
    c = np.frombuffer(counts.encode(), np.uint8).astype(np.int64) - 48
    if c.size == 0 or c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        return -1
    ends = np.flatnonzero((c & 0x20) == 0)  # each number: 5 bits a character, 0x20 = more follow
    starts = np.r_[0, ends[:-1] + 1]
    digit = np.arange(c.size) - np.repeat(starts, ends - starts + 1)
    runs = np.add.reduceat((c & 0x1F) << (5 * digit), starts)
    runs -= ((c[ends] & 0x10) != 0) << (5 * (digit[ends] + 1))  # sign bit of the last character
    runs[2::2], runs[1::2] = np.cumsum(runs[2::2]), np.cumsum(runs[1::2])  # from the third, deltas to run m - 2
    return int(runs.sum()) if (runs >= 0).all() else -1


def read_annotations(source: str | os.PathLike, prefix: str = DEFAULT_PREFIX) -> list[CxrSegmentations]:
    """Every image of a ``gt_segmentations_*.json``, checked before anything is decoded or written: a
    malformed file fails naming the key, not after half the truth files are written."""
    source = Path(source)
    doc = read_json(source)
    if not isinstance(doc, dict) or not doc:
        raise ValueError(f"{source}: expected a JSON object of CXR id -> pathology segmentations")
    prefix = relative_output(prefix, "--prefix").as_posix()
    images = []
    for key, pathologies in doc.items():
        match = _CXR_ID.fullmatch(key)
        if match is None:
            raise ValueError(f"{source}: key {key!r} is not a CheXlocalize CXR id "
                             "(patient<N>_study<N>_view<N>_frontal or _lateral)")
        if not isinstance(pathologies, dict):
            raise ValueError(f"{source}: {key!r}: expected an object of pathology -> segmentation")
        rles: dict[int, dict[str, Any]] = {}
        sizes: dict[tuple[int, int], str] = {}
        if "img_size" in pathologies:
            raise ValueError(f"{source}: {key!r} holds 'img_size': this is CheXlocalize's polygon file "
                             "(gt_annotations_*.json); pass its RLE masks, gt_segmentations_*.json")
        for name, value in pathologies.items():
            if name not in CHANNELS:
                raise ValueError(f"{source}: {key!r}: unknown pathology {name!r}; expected one of {sorted(CHANNELS)}")
            channel = OBSERVATIONS.index(CHANNELS[name])
            if channel in rles:
                raise ValueError(f"{source}: {key!r}: {CHANNELS[name]!r} is given twice ('Airspace Opacity' is "
                                 "its older name)")
            sizes.setdefault(_checked_size(source, key, name, value), name)
            rles[channel] = {"size": value["size"], "counts": value["counts"]}
        if len(sizes) > 1:
            raise ValueError(f"{source}: {key!r}: pathologies differ in size: "
                             + ", ".join(f"{name} {list(size)}" for size, name in sizes.items()))
        if not rles:
            raise ValueError(f"{source}: {key!r}: no pathology segmentation")
        patient, study, view, side = match.groups()
        images.append(CxrSegmentations(key, f"{prefix}/{patient}/{study}/{view}.jpg", side, next(iter(sizes)), rles))
    return images


def truth_arrays(source: str | os.PathLike, image: CxrSegmentations) -> dict[str, np.ndarray]:
    """An image's truth file content (docs/FORMATS.md): ``mask`` uint8 ``(14, h, w)`` and ``annotated``.
    Only non-empty segmentations are decoded: most of an image's 10 are empty, and a decoded mask is
    column-major, so each costs a transpose of the full image."""
    from pycocotools import mask as coco_mask  # only this command needs it

    channels = sorted(image.rles)
    areas = coco_mask.area([image.rles[c] for c in channels])
    filled = [c for c, area in zip(channels, areas) if area > 0]
    mask = np.zeros((len(OBSERVATIONS), *image.size), np.uint8)
    if filled:
        decoded = coco_mask.decode([image.rles[c] for c in filled])  # (h, w, n), 0/1
        if decoded.shape != (*image.size, len(filled)):
            raise ValueError(f"{source}: {image.key!r}: decoded masks are {decoded.shape[:2]}, not the size "
                             f"{list(image.size)} they give")
        mask[filled] = np.moveaxis(decoded, -1, 0)
    annotated = np.zeros(len(OBSERVATIONS), bool)
    annotated[channels] = True
    return {"mask": mask, "annotated": annotated}


@dataclass
class Conversion:
    """What ``convert`` wrote: truth files, images of other views left out, non-empty masks per pathology."""

    folder: Path
    written: int
    other_views: int
    non_empty: dict[str, int]


def convert(source: str | os.PathLike, out_dir: str | os.PathLike, prefix: str = DEFAULT_PREFIX,
            views: str = "frontal", overwrite: bool = False, progress: bool | None = False) -> Conversion:
    """Write one truth file per image of ``views`` under ``out_dir/<prefix>``.

    Truth files already there are refused unless ``overwrite``, which removes them first (``write_truth_files``).
    ``progress``: a bar (None: only on a terminal).
    """
    if views not in VIEWS:
        raise ValueError(f"views must be one of {VIEWS}, got {views!r}")
    images = read_annotations(source, prefix)
    kept = [im for im in images if views == "all" or im.view == "frontal"]
    if not kept:
        raise ValueError(f"{source}: no {views} image; nothing written")
    folder = Path(out_dir) / relative_output(prefix, "--prefix")
    non_empty = write_truth_files(out_dir, folder, [(im.item_id, partial(truth_arrays, source, im)) for im in kept],
                                  desc="prepare-chexlocalize", overwrite=overwrite, progress=progress)
    counts = {obs: int(non_empty[c]) for c, obs in enumerate(OBSERVATIONS) if obs in CHANNELS.values()}
    return Conversion(folder, len(kept), len(images) - len(kept), counts)
