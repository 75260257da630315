"""NIH ChestX-ray14's radiologist bounding boxes (``BBox_List_2017.csv``) as truth files for label quality.

The CSV holds 984 boxes on 880 images for 8 findings: ``Image Index,Finding Label,Bbox [x,y,w,h],,,``, in
pixels of the image (x right, y down; w and h the box's size). A pixel is inside a box when its centre
``(col + 0.5, row + 0.5)`` lies in ``[x, x + w) x [y, y + h)``. Each boxed image becomes
``OUT/<id without its suffix>.npz``, where the labeller writes the label of the ``prepare-nih`` datalist id
(the image's path under ``--root`` as found), so ``label-quality`` pairs them. Findings are mapped by
:data:`cxrdoll.data.shared_sets.NIH_TO_CHEXPERT` (Mass and Nodule both to Lung Lesion: their boxes are
united). Boxes were drawn for some of an image's findings only, so ``annotated`` holds just the
observations boxed on that image: the others are unknown there, not empty. Rows are numbered like a
spreadsheet (the header is row 1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.chexpert import read_csv_cells
from cxrdoll.data.nih import TEST_LIST, find_images, image_names, read_list
from cxrdoll.data.shared_sets import NIH_TO_CHEXPERT
from cxrdoll.labels.truth_files import write_truth_files

BOX_CSV = "BBox_List_2017.csv"
# the box file's finding names -> NIH's label names; it says 'Infiltrate' where the labels say 'Infiltration'
BOX_FINDINGS: dict[str, str] = {
    **{name: name for name in ("Atelectasis", "Cardiomegaly", "Effusion", "Mass", "Nodule", "Pneumonia",
                               "Pneumothorax")},
    "Infiltrate": "Infiltration",
}
BOX_COLUMNS = ("Bbox [x", "y", "w", "h]")  # how the header 'Bbox [x,y,w,h]' splits into columns


@dataclass(frozen=True)
class Box:
    """One row of the CSV, checked: its spreadsheet row, observation channel and ``(x, y, w, h)``."""

    row: int
    channel: int
    xywh: tuple[float, float, float, float]


@dataclass(frozen=True)
class BoxedImage:
    """One image's boxes, with its ``prepare-nih`` datalist id and size ``(h, w)`` from its PNG header."""

    item_id: str
    size: tuple[int, int]
    boxes: tuple[Box, ...]


def _coordinate(path: Path, row: int, column: str, value: str) -> float:
    """A box coordinate: a finite number, not negative."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{path} row {row}, column {column!r}: value {value!r} is not a finite number >= 0")
    return number


def _pixels(start: float, size: float) -> slice:
    """The pixels whose centre ``i + 0.5`` lies in ``[start, start + size)``."""
    return slice(math.ceil(start - 0.5), math.ceil(start + size - 0.5))


def read_boxes(path: Path) -> dict[str, list[Box]]:
    """Image name -> its boxes, in the CSV's order; every cell checked before any image is looked for."""
    cells = read_csv_cells(path, (), ("Image Index", "Finding Label", *BOX_COLUMNS))
    boxes: dict[str, list[Box]] = {}
    for i, name in enumerate(image_names(path, cells)):
        row, finding = cells.rows[i], cells.text["Finding Label"][i].strip()
        if finding not in BOX_FINDINGS:
            raise ValueError(f"{path} row {row}, column 'Finding Label': value {finding!r} is not one of NIH's boxed "
                             f"findings ({', '.join(BOX_FINDINGS)})")
        x, y, w, h = (_coordinate(path, row, c, cells.text[c][i]) for c in BOX_COLUMNS)
        channel = OBSERVATIONS.index(NIH_TO_CHEXPERT[BOX_FINDINGS[finding]])
        boxes.setdefault(name, []).append(Box(row, channel, (x, y, w, h)))
    return boxes


def _check_inside(path: Path, item_id: str, size: tuple[int, int], box: Box) -> None:
    """A box must start in its image and hold a pixel centre there: an annotated, empty channel would make
    any target on it a false positive. A box running past the edge is clipped to it (``clipped`` counts them):
    refusing it would stop the whole conversion over a border drawn a pixel too far."""
    x, y, w, h = box.xywh
    for start, extent, limit, columns, side in ((x, w, size[1], BOX_COLUMNS[::2], "width"),
                                                (y, h, size[0], BOX_COLUMNS[1::2], "height")):
        if start >= limit:
            raise ValueError(f"{path} row {box.row}, column {columns[0]!r}: the box starts at {start:.10g}, "
                             f"past the {side} {limit} of {item_id} ({size[1]} x {size[0]})")
        span = _pixels(start, min(extent, limit - start))
        if span.start >= span.stop:
            raise ValueError(f"{path} row {box.row}, column {columns[1]!r}: the box ({start:.10g} + {extent:.10g}) "
                             "holds no pixel centre")


def boxed_images(root: str | os.PathLike, boxes_csv: str | os.PathLike | None = None) -> list[BoxedImage]:
    """Every image of the box CSV (``root/BBox_List_2017.csv`` by default), found under ``root`` by one walk,
    its size read from its header (no decode) and its boxes checked against it, before anything is written."""
    from PIL import Image

    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: --root is not a folder")
    path = root / BOX_CSV if boxes_csv is None else Path(boxes_csv)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: NIH's box list not found; pass --boxes")
    boxes = read_boxes(path)
    found = find_images(root, boxes)
    missing = [name for name in boxes if name not in found]
    if missing:
        raise FileNotFoundError(f"{root}: {len(missing)} image(s) of {path.name} not found under --root: "
                                f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    images = []
    for name, image_boxes in boxes.items():
        with Image.open(root / found[name]) as im:
            width, height = im.size
        for box in image_boxes:
            _check_inside(path, found[name], (height, width), box)
        images.append(BoxedImage(found[name], (height, width), tuple(image_boxes)))
    return images


def clipped(image: BoxedImage) -> int:
    """How many of the image's boxes run past its edge (their masks stop at it)."""
    height, width = image.size
    return sum(x + w > width or y + h > height for x, y, w, h in (box.xywh for box in image.boxes))


def truth_arrays(image: BoxedImage) -> dict[str, np.ndarray]:
    """An image's truth file content (docs/FORMATS.md): ``mask`` uint8 ``(14, h, w)``, the union of each
    observation's boxes, and ``annotated``, the observations boxed."""
    mask = np.zeros((len(OBSERVATIONS), *image.size), np.uint8)
    annotated = np.zeros(len(OBSERVATIONS), bool)
    for box in image.boxes:
        x, y, w, h = box.xywh
        mask[box.channel, _pixels(y, h), _pixels(x, w)] = 1
        annotated[box.channel] = True
    return {"mask": mask, "annotated": annotated}


@dataclass
class Conversion:
    """What ``convert`` wrote: truth files, boxes, boxed images per observation."""

    folder: Path
    written: int
    boxes: int
    clipped: int  # boxes running past their image's edge, cut at it
    boxed: dict[str, int]
    outside_test_list: int | None  # boxed images not in ROOT/test_list.txt (None: no list there)


def convert(root: str | os.PathLike, out_dir: str | os.PathLike, boxes_csv: str | os.PathLike | None = None,
            overwrite: bool = False, progress: bool | None = False) -> Conversion:
    """Write one truth file per boxed image under ``out_dir``.

    Truth files already there are refused unless ``overwrite``, which removes them first (``write_truth_files``).
    ``progress``: a bar (None: only on a terminal).
    """
    images = boxed_images(root, boxes_csv)
    folder = Path(out_dir)
    boxed = write_truth_files(folder, folder, [(im.item_id, partial(truth_arrays, im)) for im in images],
                              desc="prepare-nih-boxes", overwrite=overwrite, progress=progress)
    observations = sorted({NIH_TO_CHEXPERT[f] for f in BOX_FINDINGS.values()}, key=OBSERVATIONS.index)
    return Conversion(folder, len(images), sum(len(im.boxes) for im in images), sum(map(clipped, images)),
                      {obs: int(boxed[OBSERVATIONS.index(obs)]) for obs in observations},
                      outside_test_list(root, images))


def outside_test_list(root: str | os.PathLike, images: list[BoxedImage]) -> int | None:
    """How many boxed images ``root/test_list.txt`` does not list (None without the list): a
    ``prepare-nih --validation test-list`` datalist's validation list, the one to label, lacks them."""
    path = Path(root).expanduser() / TEST_LIST
    if not path.is_file():
        return None
    test = read_list(path)
    return sum(Path(im.item_id).name not in test for im in images)
