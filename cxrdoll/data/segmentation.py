"""Segmentation data: DoLL label files for pre-training and downstream mask sets for fine-tuning.

Every sample becomes ``{"image": (1, S, S) float32 in [0, 1], "label": (C, S, S) float32, ...}``
where the label holds 0/1 where a pixel counts and NaN where it is ignored (the convention of
``cxrdoll.engines.segmentation``). Images are read in numpy (row, column) order and resized with
area interpolation, exactly as ``cxrdoll.data.transforms.load_image_transforms`` does for PNG;
masks are resized nearest-neighbour.

Downstream datalist (``docs/FORMATS.md``, "Downstream segmentation datalist")::

    {"classes": [...], "training": [{"image": p, "label": [one mask per class], "ignore": p?, "id": s}],
     "validation": [...]}

Relative paths are resolved against the datalist's folder; a single-class item may give ``label``
as one path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence, Sized

import numpy as np
import torch
from monai.transforms import Resize
from torch.utils.data import RandomSampler

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.any_image import DICOM_SUFFIXES, IMAGE_FILE_SUFFIXES, MASK_SUFFIXES
from cxrdoll.data.datalist import absolute_files, check_item_kinds, load_datalist
from cxrdoll.data.transforms import TWELVE_BIT_MAX, refuse_16_bit_colour_png, unit_range
from cxrdoll.io import is_temporary, read_json, relative_output, same_file_key
from cxrdoll.labels.quality import read_truth
from cxrdoll.labels.writer import check_label, label_path, read_label
from cxrdoll.networks.encoders import checked_image_size

SCR_STRUCTURES: tuple[str, ...] = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
JSRT_SHAPE: tuple[int, int] = (2048, 2048)
JSRT_MAX = TWELVE_BIT_MAX  # 12-bit values
# PIL modes whose pixels are single values, read as they are
_SINGLE_VALUE_MODES = ("I;16", "I;16B", "I;16L", "I", "F", "1", "L")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _stem(path: Path) -> str:
    return path.name[: -len(_suffix(path))] if _suffix(path) else path.name


def _unique_stems(paths: Iterable[Path], what: str) -> None:
    """Refuse two files whose stems differ only in case, Unicode form, or not at all (``scan.png``, ``scan.JPG``).

    Ids are stems, and an id names the inference output folder and the mask a folder datalist
    matches: two such files would silently share one (and on case-insensitive disks ``A`` and
    ``a`` are one folder).
    """
    seen: dict[str, Path] = {}
    for path in paths:
        key = same_file_key(_stem(path))
        if key in seen:
            raise ValueError(f"{what}: {seen[key]} and {path} have the same file stem {_stem(path)!r} "
                             "(ids are file stems); rename one")
        seen[key] = path


def _check_stem_names_folder(path: Path) -> None:
    """Refuse a file whose stem, its id, names no folder inside the output: '...png' has the stem '..'."""
    try:
        relative_output(_stem(path), "file stem")
    except ValueError as err:
        raise ValueError(f"{path}: {err} (ids are file stems, and name the output folders); rename it") from None


def _checked_file(path: Path, suffixes: Sequence[str], what: str) -> str:
    """``path``'s lower-case suffix, after checking that the file exists and has one of ``suffixes``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    suffix = _suffix(path)
    if suffix not in suffixes:
        raise ValueError(f"{path}: unsupported {what} file type {suffix!r}; expected one of {list(suffixes)}")
    return suffix


def read_jsrt_img(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A JSRT ``.IMG``: headerless 16-bit big-endian raw holding 12-bit values (``JSRT_SHAPE``), as uint16."""
    path = Path(path)
    shape = shape or JSRT_SHAPE
    expected = 2 * shape[0] * shape[1]
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path}: {size} bytes, expected {expected} for a {shape[0]}x{shape[1]} 16-bit raw JSRT image")
    array = np.fromfile(path, dtype=">u2").reshape(shape).astype(np.uint16)
    if array.max() > JSRT_MAX:
        raise ValueError(f"{path}: value {int(array.max())} exceeds the 12-bit range of a JSRT image")
    return array


def read_array(path: str | Path, mask: bool = False, what: str = "image") -> np.ndarray:
    """A 2D array from PNG/JPEG/GIF/TIFF (PIL), NIfTI (nibabel, singleton axes dropped, stored
    (row, column) order, affine ignored) or JSRT ``.IMG``. Pixels as stored: EXIF orientation is ignored.

    Colour images become greyscale by brightness (PIL ``convert("L")``); with ``mask`` they are
    read as ``read_mask`` needs instead (``_decode_mask``).
    """
    path = Path(path)
    suffix = _checked_file(path, MASK_SUFFIXES, what)
    if suffix == ".img":
        return read_jsrt_img(path)
    try:
        array = _decode(path, suffix, mask)
    except Exception as err:  # nibabel's and PIL's errors for a bad file are of many types, not all OSError
        if isinstance(err, ValueError) and str(err).startswith(f"{path}: "):
            raise  # already says what is wrong with the file (a refused 16-bit colour PNG)
        raise ValueError(f"{path}: cannot read as {suffix} ({type(err).__name__}: {' '.join(str(err).split())})") from None
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2D image, found shape {tuple(array.shape)}")
    return array


def _decode(path: Path, suffix: str, mask: bool = False) -> np.ndarray:
    if suffix in (".nii", ".nii.gz"):
        import nibabel as nib

        array = np.squeeze(np.asanyarray(nib.load(str(path)).dataobj))
        return (array != 0) if mask else array
    from PIL import Image

    with Image.open(path) as im:
        refuse_16_bit_colour_png(im)  # images and masks: Pillow would keep only each sample's high byte
        if mask:
            return _decode_mask(im)
        keep = im.mode in _SINGLE_VALUE_MODES
        return np.asarray(im if keep else im.convert("L"))


def _decode_mask(im: Any) -> np.ndarray:
    """A PIL image as a boolean mask (True = inside), by what its pixels mean rather than their brightness.

    RGB(A) and palette images by any colour channel non-zero (alpha ignored; a palette image by the
    colours it shows, not its indices: Pillow's own quantising puts white at index 0), LA by its
    first channel, other single-value modes as they are; any non-zero value is inside. Lossy JPEG
    data is thresholded at the midpoint of its range instead (> 127 for 8 bits): its compression
    artefacts are small non-zero values around every edge and would grow the mask.
    """
    lossy = im.format == "JPEG" or (im.format == "TIFF" and str(im.info.get("compression", "")).endswith("jpeg"))
    if im.mode in _SINGLE_VALUE_MODES:
        channels = np.asarray(im)[..., None]
    elif im.mode in ("LA", "La"):
        channels = np.asarray(im)[..., :1]
    elif im.mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        channels = np.asarray(im)[..., :3]
    else:  # palette (P, PA), CMYK, YCbCr, LAB, HSV: by the colours shown
        channels = np.asarray(im.convert("RGB"))
    if not lossy or channels.dtype == bool:
        return (channels != 0).any(axis=-1)
    midpoint = np.iinfo(channels.dtype).max // 2 if channels.dtype.kind in "iu" else 0.5
    return (channels > midpoint).any(axis=-1)


def read_image(path: str | Path) -> np.ndarray:
    """Greyscale float32 in [0, 1], bright = dense: DICOM as the classifier reads it
    (``cxrdoll.dicom.loader.load_cxr_dicom``, default VOI and intensity sign), JSRT raw inverted
    (its 0 is white), else ``unit_range``."""
    path = Path(path)
    suffix = _checked_file(path, IMAGE_FILE_SUFFIXES, "image")
    if suffix in DICOM_SUFFIXES:
        from cxrdoll.dicom.loader import load_cxr_dicom

        return load_cxr_dicom(path).array[0]  # a DicomInputError (ValueError) names the file
    array = read_array(path)
    if suffix == ".img":
        return (1.0 - array.astype(np.float32) / JSRT_MAX).astype(np.float32)
    return unit_range(array)


def read_mask(path: str | Path) -> np.ndarray:
    """A binary mask (True = inside): any non-zero value, read by ``_decode_mask`` for PIL files;
    lossy JPEG masks above the midpoint of their range."""
    return read_array(path, mask=True, what="mask")


def _resize(array: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, size, size)`` float32; ``area`` for images, ``nearest-exact`` for masks."""
    tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
    return Resize(spatial_size=(size, size), mode=mode)(tensor).as_tensor().contiguous()


class LoadSegmentationSample:
    """Datalist item -> image, NaN-masked label (if the item has one), id and original image shape.

    Masks must have the image's aspect ratio (SCR masks are 1024² for 2048² JSRT images);
    ``ignore`` marks pixels that count for no class.
    """

    def __init__(self, size: int, num_classes: int | None = None) -> None:
        self.size = checked_image_size(size, whole_strides=True)
        self.num_classes = num_classes

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        image, out = _load_image(item, self.size)
        image_path = Path(item["image"])
        if item.get("label") is None:
            return out
        label_paths = [item["label"]] if isinstance(item["label"], (str, Path)) else list(item["label"])
        if self.num_classes is not None and len(label_paths) != self.num_classes:
            raise ValueError(f"{image_path}: item has {len(label_paths)} masks, expected {self.num_classes}")
        masks = [_checked_mask(p, image.shape, image_path) for p in label_paths]
        label = np.stack(masks).astype(np.float32)
        if item.get("ignore"):
            ignore = _checked_mask(item["ignore"], label.shape[1:], image_path)
            label[:, ignore] = np.nan
        out["label"] = _resize(label, self.size, "nearest-exact")
        return out

    def placeholder(self, item: dict[str, Any]) -> dict[str, Any]:
        """A black image's sample in place of an unreadable one (``cxrdoll.data.unreadable``; inference items only)."""
        image_path = Path(item["image"])
        return {"image": torch.zeros(1, self.size, self.size), "id": str(item.get("id", _stem(image_path))),
                "image_path": str(image_path), "orig_shape": torch.tensor([self.size, self.size])}


def _checked_mask(path: str | Path, shape: Sequence[int], image_path: Path) -> np.ndarray:
    mask = read_mask(path)
    if mask.shape[0] * shape[1] != mask.shape[1] * shape[0]:
        raise ValueError(f"{path}: mask shape {mask.shape} does not match the aspect of image {image_path} {tuple(shape)}")
    if mask.shape != tuple(shape):
        tensor = torch.as_tensor(mask[None], dtype=torch.float32)
        mask = Resize(spatial_size=tuple(shape), mode="nearest-exact")(tensor).as_tensor()[0].numpy() > 0.5
    return mask


class LoadDollSample:
    """DoLL datalist item -> image and the 14-channel target of ``docs/FORMATS.md`` "DoLL labels".

    ``state`` 1: the mask is the target; 0: an empty target; -1: NaN (ignored). With ``truth_dir``
    (synthetic data), the true finding masks ``truth_dir/<id without its image extension>.npz`` replace the
    DoLL label and every annotated channel counts; one the truth file does not annotate (CheXlocalize's
    Fracture) is NaN, as its truth is unknown.
    """

    def __init__(self, size: int, truth_dir: str | Path | None = None) -> None:
        self.size = checked_image_size(size, whole_strides=True)
        self.truth_dir = Path(truth_dir) if truth_dir else None

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        _, out = _load_image(item, self.size)
        if self.truth_dir is None:
            label = read_doll_label(item["label"])
        else:
            mask, annotated = read_truth(label_path(self.truth_dir, out["id"]))
            label = mask.astype(np.float32)
            label[~annotated] = np.nan
        out["label"] = _resize(label, self.size, "nearest-exact")
        return out


def _load_image(item: dict[str, Any], size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The full-size image and the sample fields every loader shares (resized image, id, path, shape)."""
    image_path = Path(item["image"])
    image = read_image(image_path)
    return image, {
        "image": _resize(image[None], size, "area"),
        "id": str(item.get("id", _stem(image_path))),
        "image_path": str(image_path),
        "orig_shape": torch.tensor(image.shape),
    }


def read_doll_label(path: str | Path) -> np.ndarray:
    """A DoLL ``.npz`` as a float32 ``(14, S, S)`` target: mask where state is 1, 0 where 0, NaN where -1."""
    path = Path(path)
    arrays = read_label(path, keys=("mask", "state"))  # a corrupt or missing file fails naming itself
    for key in ("mask", "state"):
        if key not in arrays:
            raise ValueError(f"{path}: missing key {key!r}")
    mask, state = np.asarray(arrays["mask"]), np.asarray(arrays["state"])
    check_label(path, mask, state)
    if not np.isin(state, (-1, 0, 1)).all():
        raise ValueError(f"{path}: 'state' must be {len(OBSERVATIONS)} values of -1/0/1, found {state.tolist()}")
    label = (mask != 0).astype(np.float32)
    label[state == 0] = 0.0
    label[state == -1] = np.nan
    return label


def load_segmentation_datalist(path: str | Path, split: str, kind: str = "downstream") -> list[dict[str, Any]]:
    """Items of one split of a datalist of ``kind`` (``downstream`` or ``doll``, as
    ``cxrdoll.data.datalist.DATALIST_KINDS``), paths made absolute against the datalist's folder.

    Every item's kind is checked before any is used, so another stage's datalist is refused in one
    line before training starts. An empty split is refused: MONAI's engines skip an empty loader
    with only a warning.
    """
    path = Path(path)
    data = load_datalist(path, (split,), ("image",))
    if not data[split]:
        raise ValueError(f"{path}: {split!r} list is empty")
    check_item_kinds(path, split, data[split], kind)
    return [absolute_files(item, path.resolve().parent, FILE_KEYS) for item in data[split]]


# the item fields that name files (one path, or a list of them for ``label``)
FILE_KEYS: tuple[str, ...] = ("image", "label", "ignore")


def item_files(item: dict[str, Any]) -> list[str]:
    """Every file an item names: its image, masks and ignore mask."""
    files: list[str] = []
    for key in FILE_KEYS:
        value = item.get(key)
        if isinstance(value, (list, tuple)):
            files.extend(map(str, value))
        elif value:
            files.append(str(value))
    return files


def datalist_classes(path: str | os.PathLike) -> list[str]:
    """The datalist's ``classes``; one unnamed class (``foreground``) when absent and labels are single."""
    path = Path(path)
    data = read_json(path)
    if "classes" in data:
        classes = data["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
            raise ValueError(f"{path}: 'classes' must be a non-empty list of class names, got {classes!r}")
        return classes
    first = next((item for split in ("training", "validation") for item in data.get(split, [])), None)
    if first is None or isinstance(first.get("label"), (list, tuple)):
        raise ValueError(f"{path}: no 'classes' list; it is required when items have several masks")
    return ["foreground"]


def first_n(items: list[dict[str, Any]], n: int | None) -> list[dict[str, Any]]:
    """The first ``n`` items (all when ``n`` is None); asking for more than exist is an error."""
    if n is None:
        return items
    if not 0 < n <= len(items):
        raise ValueError(f"num_train={n} but the training split has {len(items)} items")
    return items[:n]


def split_by_hash(ids: Iterable[str], val_fraction: float) -> set[str]:
    """The ids put in validation: the ``round(n * val_fraction)`` smallest SHA-1 digests (stable, exact)."""
    ids = sorted(set(ids))
    ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    return set(ranked[: round(len(ids) * val_fraction)])


def folder_datalist(
    images_dir: str | Path, mask_dirs: dict[str, str | Path], val_fraction: float = 0.2
) -> dict[str, Any]:
    """A datalist from ``images_dir`` and one mask folder per class, matched by file stem.

    Serves the SCR/JSRT layout (``All247images/*.IMG`` with ``masks/<structure>/*.gif``) and the
    synthetic organ and lesion sets (``images/*.png`` with ``masks/...``). Every image needs every mask.
    Two images, or two masks of one class, whose stems differ only in case or not at all are refused.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: image folder not found")
    images = sorted(p for p in images_dir.iterdir() if _listed(p, IMAGE_FILE_SUFFIXES))
    if not images:
        raise ValueError(f"{images_dir}: no images ({', '.join(IMAGE_FILE_SUFFIXES)})")
    _unique_stems(images, str(images_dir))
    by_class: dict[str, dict[str, Path]] = {}
    for cls, folder in mask_dirs.items():
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: mask folder for {cls!r} not found")
        masks = sorted(p for p in folder.iterdir() if _listed(p, MASK_SUFFIXES))
        _unique_stems(masks, f"mask folder for {cls!r} {folder}")
        by_class[cls] = {_stem(p): p for p in masks}
    items = []
    for image in images:
        stem = _stem(image)
        missing = [cls for cls, masks in by_class.items() if stem not in masks]
        if missing:
            raise FileNotFoundError(f"{image}: no mask for {missing} in {[str(mask_dirs[c]) for c in missing]}")
        items.append({"image": str(image.resolve()), "label": [str(by_class[c][stem].resolve()) for c in mask_dirs], "id": stem})
    validation = split_by_hash([i["id"] for i in items], val_fraction)
    return {
        "classes": list(mask_dirs),
        "training": [i for i in items if i["id"] not in validation],
        "validation": [i for i in items if i["id"] in validation],
    }


def scr_datalist(jsrt_dir: str | Path, scr_masks_dir: str | Path, val_fraction: float = 0.2) -> dict[str, Any]:
    """JSRT images (``*.IMG``) with SCR masks ``<scr_masks_dir>/<structure>/<name>.gif``."""
    return folder_datalist(jsrt_dir, {s: Path(scr_masks_dir) / s for s in SCR_STRUCTURES}, val_fraction)


def shared_lungs_datalist(root: str | Path) -> dict[str, Any]:
    """``seg_lungs_covid_ieee8023_v7labs``: its patient split, absolute paths, and ``masks/ignore`` where present."""
    root = Path(root)
    source = root / "datalist.json"
    data = load_datalist(source, ("training", "validation"), ("image", "label"))
    out: dict[str, Any] = {"classes": ["lung"]}
    for split in ("training", "validation"):
        items = []
        for i, item in enumerate(data[split]):
            for key in ("image", "label"):
                if not isinstance(item[key], str) or not item[key]:
                    raise ValueError(f"{source}: {split}[{i}].{key} must be a file path, got {item[key]!r}")
            entry = absolute_files(item, root, FILE_KEYS)
            ignore = root / "masks" / "ignore" / Path(item["image"]).name
            if ignore.is_file():
                entry["ignore"] = str(ignore)
            entry["id"] = _stem(Path(item["image"]))
            entry["label"] = [entry["label"]]
            items.append(entry)
        out[split] = items
    _unique_stems([Path(i["image"]) for split in ("training", "validation") for i in out[split]], str(source))
    return out


def _listed(path: Path, suffixes: Sequence[str]) -> bool:
    """Whether a folder scan lists ``path``: a file with one of ``suffixes``, not an atomic write's
    leftover temporary (``.x.png.<random>.tmp.png``, which a killed writer leaves)."""
    return path.is_file() and _suffix(path) in suffixes and not is_temporary(path.name)


def folder_items(folder: str | Path) -> list[dict[str, Any]]:
    """Inference items: every supported image in ``folder`` (DICOM too; sorted), id = file stem.

    Two images whose stems differ only in case or not at all are refused: they would write one output folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    images = sorted(p for p in folder.iterdir() if _listed(p, IMAGE_FILE_SUFFIXES))
    if not images:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_FILE_SUFFIXES)})")
    _unique_stems(images, str(folder))  # ids name the output folders: OUT/<id>/
    for image in images:
        _check_stem_names_folder(image)
    return [{"image": str(p.resolve()), "id": _stem(p)} for p in images]


def epoch_sampler(dataset: Sized, samples_per_epoch: int | None) -> RandomSampler | None:
    """With ``samples_per_epoch``, an epoch is that many draws with replacement, whatever the set's size.

    Few-shot runs (4 images) then take as many steps per epoch as large ones, so "Dice per epoch"
    compares starting points at equal optimisation effort. ``None`` keeps ordinary epochs.
    """
    if not samples_per_epoch:
        return None
    return RandomSampler(dataset, replacement=True, num_samples=int(samples_per_epoch))
