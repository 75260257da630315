"""Classification data for the classifier bundle: datalist items -> image + label tensors.

Labels leave here as one float32 vector with NaN where the label mask is 0, so MONAI's default
batch preparation carries label and mask together to the masked loss and the AUROC metric.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from collections.abc import Sequence as SequenceABC
from typing import Any, Hashable, Mapping, Sequence

import ignite.distributed as idist
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, MapTransform

from cxrdoll.data.any_image import DICOM_SUFFIXES, LoadAnyImaged
from cxrdoll.data.cache import LoadCachedImaged, UInt8ImageCache
from cxrdoll.data.datalist import load_classification_datalist
from cxrdoll.io import is_temporary
from cxrdoll.networks.encoders import checked_image_size

# Where ``dataset_dir`` may hold the classification datalist, in the order tried.
DATALIST_CANDIDATES: tuple[str, ...] = ("datalists/chexpert.json", "chexpert.json", "datalist.json")

logger = logging.getLogger(__name__)


def find_datalist(dataset_dir: str | os.PathLike) -> str:
    """The classification datalist inside ``dataset_dir``: e.g. a ``synth`` output after
    ``prepare-chexpert --out DIR/datalists/chexpert.json``."""
    root = Path(dataset_dir)
    for name in DATALIST_CANDIDATES:
        if (root / name).is_file():
            return str(root / name)
    raise FileNotFoundError(f"{root}: no classification datalist (looked for {', '.join(DATALIST_CANDIDATES)})")


def classification_items(datalist: str | os.PathLike, section: str) -> CompactItems:
    """Validated items of one section (``training`` or ``validation``) of a classification datalist."""
    data = load_classification_datalist(datalist)
    items = data[section]
    if not items:
        raise ValueError(f"{datalist}: {section!r} list is empty")
    return CompactItems(items)


class CompactItems(SequenceABC):
    """A datalist section held in four numpy arrays; each access builds the item's dict of the
    keys training reads (``image``, ``id``, ``label``, ``label_mask``).

    DataLoader workers are forked and share the parent's memory until they write to it. A list of
    191K item dicts is written to all the same: the garbage collector's passes and every access's
    reference counts touch each dict and label list, so each worker ended with its own copy
    (benchmarks/worker_memory.py, 191K items: 159 MB private per worker after an epoch; 15 MB with
    these arrays, a few objects whose data no one writes).
    """

    def __init__(self, items: Sequence[Mapping[str, Any]]) -> None:
        self._image = np.array([str(item["image"]).encode() for item in items], dtype=bytes)
        has_ids = all("id" in item for item in items)
        self._id = np.array([str(item["id"]).encode() for item in items], dtype=bytes) if has_ids else None
        self._label = np.array([item["label"] for item in items], dtype=np.uint8).reshape(len(items), -1)
        self._mask = np.array([item["label_mask"] for item in items], dtype=np.uint8).reshape(len(items), -1)

    def __len__(self) -> int:
        return len(self._image)

    def __getitem__(self, index):  # int -> dict; slice -> list of dicts
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        item = {"image": self._image[index].decode(), "label": self._label[index].tolist(),
                "label_mask": self._mask[index].tolist()}
        if self._id is not None:
            item["id"] = self._id[index].decode()
        return item


def scorable_validation(items: Sequence[Mapping[str, Any]], mean_over: Sequence[str],
                        datalist: str | os.PathLike) -> Sequence[Mapping[str, Any]]:
    """The validation items, refused when no observation of ``mean_over`` has both classes among them.

    The best model is chosen by the mean AUROC over ``mean_over``; with none defined, the run
    trained to its end, exited 0 and saved no model at all.
    """
    from cxrdoll.constants import OBSERVATIONS

    unknown = [name for name in mean_over if name not in OBSERVATIONS]
    if unknown or not mean_over:
        raise ValueError(f"auroc_mean_over {list(mean_over)}: expected CheXpert observation names, "
                         f"got {unknown or 'none'}")
    labels = np.array([item["label"] for item in items], dtype=float)
    known = np.array([item["label_mask"] for item in items], dtype=bool)
    both = [name for i, name in enumerate(OBSERVATIONS)
            if (labels[known[:, i], i] == 1).any() and (labels[known[:, i], i] == 0).any()]
    if not any(name in both for name in mean_over):
        scorable = f"those that do: {', '.join(both)}" if both else "no observation does"
        raise ValueError(f"{datalist}: no observation of auroc_mean_over ({', '.join(mean_over)}) has both positive "
                         f"and negative labels in the validation split, so no AUROC selects a model and none would "
                         f"be saved; {scorable}. Set --auroc_mean_over to some of them, or add such images")
    return items


def labelled_training(items: Sequence[Mapping[str, Any]], datalist: str | os.PathLike) -> Sequence[Mapping[str, Any]]:
    """The training items, refused when not one of their labels counts (``label_mask`` 0 throughout);
    a warning names the observations that have no counted label.

    The loss averages over counted labels only, so such a split (every study uncertain under
    ``--uncertain ignore``, say) trained nothing: the loss was 0, the run exited 0 and its random
    weights were registered with whatever validation AUROC chance gave them.
    """
    from cxrdoll.constants import OBSERVATIONS

    if isinstance(items, CompactItems):
        counted = items._mask.astype(bool)
    else:
        counted = np.array([item["label_mask"] for item in items], dtype=bool).reshape(len(items), -1)
    per_observation = counted.sum(axis=0)
    if not per_observation.any():
        raise ValueError(f"{datalist}: no label of the training split's {len(items)} images counts (label_mask 0 "
                         "throughout, e.g. every study uncertain under --uncertain ignore), so the loss is 0 and "
                         "nothing would train")
    unlabelled = [name for name, n in zip(OBSERVATIONS, per_observation) if n == 0]
    if unlabelled:
        logger.warning("%s: the training split has no counted label for %s: that output is never trained, and its "
                       "validation AUROC is an untrained network's", datalist, ", ".join(unlabelled))
    return items


def fill_one_batch(items: Sequence[Mapping[str, Any]], batch_size: int,
                   datalist: str | os.PathLike) -> Sequence[Mapping[str, Any]]:
    """The training items, refused when a process's share cannot fill one batch.

    The training loader drops its last incomplete batch, so such an epoch has no iteration, and
    MONAI's trainer then skips training with only a warning: no model, no metrics, no error.
    """
    world = idist.get_world_size()  # 1 outside DDP
    per_process = math.ceil(len(items) / world)  # DistributedSampler pads every share to this
    if per_process < int(batch_size):
        share = f" ({per_process} per process on {world})" if world > 1 else ""
        raise ValueError(f"{datalist}: the training split has {len(items)} images{share}, fewer than one batch of "
                         f"batch_size={batch_size}; the incomplete last batch is dropped, so nothing would train: "
                         f"set batch_size to at most {per_process}")
    return items


class MaskLabelsd(MapTransform):
    """Turn ``label`` + ``label_mask`` into one float32 tensor, NaN where the mask is 0."""

    def __init__(self, label_key: str = "label", mask_key: str = "label_mask") -> None:
        super().__init__(keys=[label_key], allow_missing_keys=False)
        self.label_key = label_key
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = torch.as_tensor(np.asarray(d[self.label_key], dtype=np.float32))
        mask = torch.as_tensor(np.asarray(d.pop(self.mask_key), dtype=np.float32))
        if label.shape != mask.shape:
            raise ValueError(f"{d.get('id', d.get('image'))}: label {tuple(label.shape)} and label_mask {tuple(mask.shape)} differ")
        d[self.label_key] = torch.where(mask > 0, label, torch.full_like(label, float("nan")))
        return d


class KeepKeysd(MapTransform):
    """Drop everything but ``keys`` so default collation never meets ragged fields (``raw_label`` nulls)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return {k: data[k] for k in self.keys if k in data}


def classification_transforms(
    image_size: int,
    cache: UInt8ImageCache | None = None,
    augmentations: Sequence[Any] = (),
    keep: KeysCollection = ("image", "label", "id"),
) -> Compose:
    """Load (from the uint8 cache when given, else decode PNG/JPEG/DICOM), mask labels, augment.

    The image leaves as a plain ``torch.Tensor``: MONAI's augmentations return ``MetaTensor``, and
    a ``MetaTensor`` input makes every layer of the network pay Python metadata handling on the
    host; on a GPU that host time, not the device, bounded the training step (half the bare rate).
    """
    image_size = checked_image_size(image_size)
    if cache is not None and cache.size != image_size:
        raise ValueError(f"cache {cache.path} holds {cache.size}px images, not {image_size}px")
    load = LoadCachedImaged(cache) if cache is not None else LoadAnyImaged(image_size)
    return Compose([load, MaskLabelsd(), KeepKeysd(keys=keep, allow_missing_keys=True), *augmentations,
                    EnsureTyped(keys="image", data_type="tensor", track_meta=False)])


IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)


def image_items(image_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Every PNG/JPEG/DICOM under ``image_dir`` (sorted), with its relative path as ``id``, for inference.
    A broken symlink is listed too: its load fails, and inference reports it as skipped. An atomic
    write's leftover temporary (``.x.png.<random>.tmp.png``, a killed writer's) is not an image."""
    root = Path(image_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    paths = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and not is_temporary(p.name) and not p.is_dir())
    if not paths:
        raise FileNotFoundError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images found")
    return [{"image": str(p), "id": str(p.relative_to(root))} for p in paths]
