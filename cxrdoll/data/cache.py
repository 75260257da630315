"""A pre-resized uint8 image cache on disk, so an epoch reads memory-mapped pixels, not JPEGs.

One ``.npy`` file of shape ``(N, size, size)`` per (ordered image list, size). Its name is a hash of
the size and of every path with its byte size and modification time, so editing, adding or
reordering images gives a new cache instead of stale pixels. Built once with parallel decoding;
read through ``np.load(mmap_mode="r")`` by every DataLoader worker.
A build can take an hour (191K full-size CheXpert JPEGs at ~98 ms each on 4 workers), so it
resumes: it writes ``<cache name>.partial`` beside the cache and, every ``CHECKPOINT_ROWS`` images,
flushes it and records the rows done in ``<cache name>.partial.json``. A restart continues from
there; the partial file is renamed to the cache only when complete. A ``<cache name>.lock`` file
lets one process at a time build it. Under DDP rank 0 builds while the other ranks wait.
Training needs every listed image: a build that meets unreadable ones leaves no cache, lists them
all in ``<cache name>_unreadable.csv`` beside it, and fails naming the first.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Transform
from tqdm.auto import tqdm

from cxrdoll.data.any_image import LoadAnyImaged
from cxrdoll.data.datalist import PackedItems
from cxrdoll.data.transforms import PIXEL_RULES_VERSION
from cxrdoll.data.unreadable import ERROR_KEY, SkipUnreadable
from cxrdoll.distributed import host_group
from cxrdoll.io import files_fingerprint, read_json, write_csv_atomic, write_json_atomic
from cxrdoll.networks.encoders import checked_image_size

logger = logging.getLogger(__name__)

# Images decoded between progress records: ~25 s of full-size JPEGs on 4 workers, the most a kill loses.
CHECKPOINT_ROWS = 1024
def _check_space(path: Path) -> None:
    """Refuse to fill ``path`` (sparse, at its full size) unless the disk has room for its unwritten
    blocks. The cache is written through a memory map, where a full disk is a SIGBUS that ends the
    process without a word; checked first, it is an OSError naming the file and the space needed.
    (``posix_fallocate`` would reserve it, but glibc emulates that block by block where the file
    system lacks it, as NFSv3 does: minutes for a 20 GB cache.)"""
    status = path.stat()
    needed = status.st_size - status.st_blocks * 512
    free = os.statvfs(path.parent)
    available = free.f_bavail * free.f_frsize
    if needed > available:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: the image cache needs {needed / 2**30:.2f} GiB "
                                    f"more, {available / 2**30:.2f} GiB are free", str(path))


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
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            self._build_once(num_workers, batch_size)
            return
        # Under DDP rank 0 builds while the others wait, instead of every rank decoding everything. They
        # wait in the host group: the default group's timeout (NCCL's 10 min) is shorter than a build.
        group = host_group()
        if torch.distributed.get_rank() == 0:
            self._build_once(num_workers, batch_size)
        torch.distributed.barrier(group=group)

    def _key(self) -> str:
        header = f"{self.size}\npixels v{PIXEL_RULES_VERSION}\n"
        return files_fingerprint(self.paths, header=header, what="image listed in the datalist")[:16]

    def _beside(self, suffix: str) -> Path:
        return self.path.with_name(self.path.stem + suffix)

    def _build_once(self, num_workers: int, batch_size: int) -> None:
        """Build unless built, holding the lock: two runs sharing ``cache_dir`` would write one partial file.
        A finished cache is used as it is, also from a read-only folder."""
        if self.path.is_file():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._beside(".lock"), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("%s: waiting for another process building it", self.path)
                fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.path.is_file():
                self._build(num_workers, batch_size)

    def _resumed(self, partial: Path, record: Path) -> tuple[np.ndarray, int, list[tuple[str, str]]]:
        """The partial file a stopped build left, the rows its record says were flushed and the unreadable
        images among them; else a new partial file."""
        shape = (len(self.paths), self.size, self.size)
        try:
            done = read_json(record)
            rows, unreadable = int(done["rows"]), [(str(p), str(e)) for p, e in done["unreadable"]]
            # read-only first: "r+" would extend a truncated file with zeros, rows the record counts as built
            out = np.load(partial, mmap_mode="r")
            resumable = out.shape == shape and out.dtype == np.uint8 and 0 < rows <= len(self.paths)
            if resumable:
                out = np.load(partial, mmap_mode="r+")
        except (OSError, ValueError, KeyError, TypeError):  # no record, or a partial file of no use
            resumable = False
        if resumable:
            logger.info("%s: resuming the build at image %d of %d", self.path, rows, len(self.paths))
            _check_space(partial)  # outside the try: a full disk must not empty the rows already built
            return out, rows, unreadable
        record.unlink(missing_ok=True)  # before the partial file is emptied, so no record outlives its rows
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        _check_space(partial)
        return out, 0, []

    def _build(self, num_workers: int, batch_size: int) -> None:
        partial, record = self._beside(".partial"), self._beside(".partial.json")
        out, start, unreadable = self._resumed(partial, record)
        # A generator of its own: a DataLoader draws its workers' base seed from torch's global one at each
        # iteration (and MONAI's, with num_workers=0, draws from it and re-seeds it when made). Drawn from the
        # global one, a run that built its cache got other initial weights, shuffle and augmentations than the
        # same run, same seed, finding the cache built (validation AUROC 0.4607 against 0.4704 on a toy set).
        loader = DataLoader(
            Dataset(PackedItems([{"image": p} for p in self.paths[start:]]), SkipUnreadable(LoadAnyImaged(self.size))),
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle=False,
            generator=torch.Generator(),
        )
        recorded = start
        with tqdm(total=len(self.paths), initial=start, unit="img", desc=f"image cache {self.path.name}",
                  mininterval=5.0) as bar:
            for batch in loader:
                images = batch["image"][:, 0].numpy()
                unreadable += [(self.paths[start + i], e) for i, e in enumerate(batch[ERROR_KEY]) if e]
                out[start : start + len(images)] = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
                start += len(images)
                bar.update(len(images))
                if start - recorded >= CHECKPOINT_ROWS:
                    out.flush()  # the rows reach the disk before the record that counts them
                    write_json_atomic(record, {"rows": start, "unreadable": unreadable})
                    recorded = start
        out.flush()
        del out
        if unreadable:  # training needs every listed image: no cache, and every bad one named at once
            # fixing an image changes its mtime, hence the cache name: this partial file is of no further use
            record.unlink(missing_ok=True)
            partial.unlink()
            report = self.path.with_name(f"{self.path.stem}_unreadable.csv")  # per image list: never stale
            write_csv_atomic(report, ("image", "reason"), unreadable)
            raise ValueError(f"{unreadable[0][1]} ({len(unreadable)} of {len(self.paths)} listed images unreadable, "
                             f"all in {report}: fix them or leave them out of the datalist)")
        os.replace(partial, self.path)
        record.unlink(missing_ok=True)

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
