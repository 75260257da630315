"""A pre-resized uint8 image cache on disk, so an epoch reads memory-mapped pixels, not JPEGs.

One ``.npy`` file of shape ``(N, size, size)`` per (ordered image list, size). Its name is a hash of
the size and of every path with its byte size and modification time, so editing, adding or
reordering images gives a new cache instead of stale pixels. Built once with parallel decoding
and written atomically; read through ``np.load(mmap_mode="r")`` by every DataLoader worker.
Training needs every listed image: a build that meets unreadable ones leaves no cache, lists them
all in ``<cache name>_unreadable.csv`` beside it, and fails naming the first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Transform

from cxrdoll.data.any_image import LoadAnyImaged
from cxrdoll.data.transforms import PIXEL_RULES_VERSION
from cxrdoll.data.unreadable import ERROR_KEY, SkipUnreadable
from cxrdoll.io import atomic_path, files_fingerprint, write_csv_atomic
from cxrdoll.networks.encoders import checked_image_size


class UInt8ImageCache:
    """Images of ``items`` (dicts with an ``image`` path) resized to ``size`` and stored as uint8."""

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        size: int,
        cache_dir: str | os.PathLike,
        num_workers: int = 0,
        batch_size: int = 32,
    ) -> None:
        self.size = checked_image_size(size)
        self.paths = [str(item["image"]) for item in items]
        if not self.paths:
            raise ValueError("cannot cache an empty image list")
        self.index = {p: i for i, p in enumerate(self.paths)}
        self.path = Path(cache_dir) / f"images_{self.size}px_{len(self.paths)}_{self._key()}.npy"
        self._array: np.ndarray | None = None
        # Under DDP rank 0 builds while the others wait, instead of every rank decoding everything.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not self.path.is_file() and (not distributed or torch.distributed.get_rank() == 0):
            self._build(num_workers, batch_size)
        if distributed:
            torch.distributed.barrier()

    def _key(self) -> str:
        header = f"{self.size}\npixels v{PIXEL_RULES_VERSION}\n"
        return files_fingerprint(self.paths, header=header, what="image listed in the datalist")[:16]

    def _build(self, num_workers: int, batch_size: int) -> None:
        loader = DataLoader(
            Dataset([{"image": p} for p in self.paths], SkipUnreadable(LoadAnyImaged(self.size))),
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle=False,
        )
        unreadable: list[tuple[str, str]] = []
        with atomic_path(self.path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(self.paths), self.size, self.size))
            start = 0
            for batch in loader:
                images = batch["image"][:, 0].numpy()
                unreadable += [(self.paths[start + i], e) for i, e in enumerate(batch[ERROR_KEY]) if e]
                out[start : start + len(images)] = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
                start += len(images)
            out.flush()
            del out
            if unreadable:  # training needs every listed image: no cache, and every bad one named at once
                report = self.path.with_name(f"{self.path.stem}_unreadable.csv")  # per image list: never stale
                write_csv_atomic(report, ("image", "reason"), unreadable)
                raise ValueError(f"{unreadable[0][1]} ({len(unreadable)} of {len(self.paths)} listed images unreadable, "
                                 f"all in {report}: fix them or leave them out of the datalist)")

    @property
    def array(self) -> np.ndarray:
        """The memory map, opened lazily so each worker process opens its own."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, path: str) -> torch.Tensor:
        """Float32 ``(1, size, size)`` in [0, 1], as ``load_image_transforms`` would give (to 1/255)."""
        try:
            i = self.index[str(path)]
        except KeyError:
            raise KeyError(f"{path}: not in image cache {self.path}") from None
        return torch.from_numpy(self.array[i].astype(np.float32) / 255.0)[None]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None  # memory maps are not pickled into DataLoader workers
        return state


class LoadCachedImaged(Transform):
    """Replace the ``image`` path by its cached pixels."""

    def __init__(self, cache: UInt8ImageCache, key: str = "image") -> None:
        self.cache = cache
        self.key = key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.key] = self.cache.image(d[self.key])
        return d
