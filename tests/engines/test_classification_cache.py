"""The uint8 image cache and the classification data chain."""

from __future__ import annotations

import csv
import math
import os
import pickle
import random

import ignite.distributed as idist
import numpy as np
import pytest
import torch

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.cache import LoadCachedImaged, UInt8ImageCache
from cxrdoll.data.classification import (
    MaskLabelsd,
    fill_one_batch,
    classification_items,
    scorable_validation,
    classification_transforms,
    find_datalist,
    image_items,
)
from cxrdoll.data.datalist import write_datalist
from cxrdoll.data.transforms import load_image_pipeline
from cxrdoll.engines.determinism import seed_run
from cxrdoll.io import save_png_atomic


@pytest.fixture()
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / "img" / f"{i}.png"
        save_png_atomic(p, rng.integers(0, 256, size=(50 + i, 40), dtype=np.uint8))
        paths.append(p)
    return paths


def test_cached_pixels_match_decoded_pipeline_to_rounding(pngs, tmp_path):
    cache = UInt8ImageCache([{"image": str(p)} for p in pngs], 32, tmp_path / "cache")
    assert cache.array.shape == (5, 32, 32) and cache.array.dtype == np.uint8
    for p in pngs:
        expected = load_image_pipeline(32)({"image": str(p)})["image"]
        got = LoadCachedImaged(cache)({"image": str(p)})["image"]
        assert got.shape == expected.shape == (1, 32, 32)
        assert torch.max(torch.abs(got - expected)).item() <= 0.5 / 255 + 1e-6


def test_cache_is_reused_when_unchanged_and_rebuilt_when_an_image_changes(pngs, tmp_path):
    items = [{"image": str(p)} for p in pngs]
    first = UInt8ImageCache(items, 32, tmp_path / "cache")
    mtime = first.path.stat().st_mtime_ns
    first.path.with_name(first.path.stem + ".lock").unlink()
    again = UInt8ImageCache(items, 32, tmp_path / "cache")
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name]  # nothing written: a read-only folder serves
    save_png_atomic(pngs[2], np.full((52, 40), 200, dtype=np.uint8))
    os.utime(pngs[2], ns=(mtime + 10**9, mtime + 10**9))
    changed = UInt8ImageCache(items, 32, tmp_path / "cache")
    assert changed.path != first.path
    assert changed.image(str(pngs[2])).mean().item() == pytest.approx(200 / 255, abs=1e-6)
    assert UInt8ImageCache(items, 48, tmp_path / "cache").path != first.path  # size is part of the key



def test_a_disk_too_small_for_the_cache_is_one_error_and_keeps_a_stopped_build(pngs, tmp_path, monkeypatch):
    """Written through a memory map, the cache met a full disk as a SIGBUS: exit code 135, no message.
    A resumed build that found the disk full must keep the rows it had (they took an hour at scale)."""
    import errno
    import json
    import types

    import cxrdoll.data.cache as cache_module

    items = [{"image": str(p)} for p in pngs]  # at 256 px the unwritten rows need blocks of their own
    monkeypatch.setattr(cache_module, "CHECKPOINT_ROWS", 1)
    load = cache_module.LoadAnyImaged.__call__
    calls = []

    class Killed(BaseException):  # not an Exception: the unreadable-image guard lets it through, as a kill
        pass

    def stops_at_the_third(self, data):
        calls.append(data)
        if len(calls) == 3:
            raise Killed
        return load(self, data)

    monkeypatch.setattr(cache_module.LoadAnyImaged, "__call__", stops_at_the_third)
    with pytest.raises(Killed):
        UInt8ImageCache(items, 256, tmp_path / "cache", batch_size=1)
    (partial,) = (tmp_path / "cache").glob("*.partial")
    built = np.load(partial)[:2].copy()
    assert built.any()

    calls.clear()
    full = types.SimpleNamespace(f_bavail=0, f_frsize=4096)
    monkeypatch.setattr(cache_module.os, "statvfs", lambda path: full)
    with pytest.raises(OSError) as err:
        UInt8ImageCache(items, 256, tmp_path / "cache", batch_size=1)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(partial)
    assert "the image cache needs" in str(err.value) and "0.00 GiB are free" in str(err.value)
    assert calls == []  # refused before decoding
    assert json.loads(next((tmp_path / "cache").glob("*.partial.json")).read_text())["rows"] == 2
    np.testing.assert_array_equal(np.load(partial)[:2], built)  # the stopped build's rows are kept
    with pytest.raises(OSError) as err:  # a new build too, before decoding
        UInt8ImageCache(items, 256, tmp_path / "other", batch_size=1)
    assert err.value.errno == errno.ENOSPC and calls == []

    # room for the rows not yet written is enough: those written hold their blocks already
    status = partial.stat()
    assert status.st_blocks * 512 >= 2 * 256 * 256
    room = types.SimpleNamespace(f_bavail=(status.st_size - status.st_blocks * 512) // 4096 + 1, f_frsize=4096)
    monkeypatch.setattr(cache_module.os, "statvfs", lambda path: room)
    monkeypatch.setattr(cache_module.LoadAnyImaged, "__call__", load)
    resumed = UInt8ImageCache(items, 256, tmp_path / "cache", batch_size=1)
    monkeypatch.undo()
    np.testing.assert_array_equal(resumed.array, UInt8ImageCache(items, 256, tmp_path / "fresh").array)


def test_a_reordered_image_list_gets_its_own_cache_with_each_path_on_its_pixels(pngs, tmp_path):
    """Rows follow the list's order: a cache named by the sorted paths would serve a reordered list
    the other order's rows, every image but the middle one under another image's path."""
    items = [{"image": str(p)} for p in pngs]
    first = UInt8ImageCache(items, 32, tmp_path / "cache")
    reordered = UInt8ImageCache(items[::-1], 32, tmp_path / "cache")
    assert reordered.path != first.path
    for p in pngs:
        expected = load_image_pipeline(32)({"image": str(p)})["image"]
        assert torch.max(torch.abs(reordered.image(str(p)) - expected)).item() <= 0.5 / 255 + 1e-6, p.name


def test_a_change_of_pixel_rules_rebuilds_the_cache(pngs, tmp_path, monkeypatch):
    import cxrdoll.data.cache as cache_module

    items = [{"image": str(p)} for p in pngs]
    first = UInt8ImageCache(items, 32, tmp_path / "cache")
    monkeypatch.setattr(cache_module, "PIXEL_RULES_VERSION", cache_module.PIXEL_RULES_VERSION + 1)
    assert UInt8ImageCache(items, 32, tmp_path / "cache").path != first.path


def test_cache_pickles_without_its_memory_map_and_reports_missing_files(pngs, tmp_path):
    cache = UInt8ImageCache([{"image": str(p)} for p in pngs], 32, tmp_path / "cache")
    _ = cache.array
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._array is None
    torch.testing.assert_close(clone.image(str(pngs[0])), cache.image(str(pngs[0])))
    with pytest.raises(KeyError, match="nope.png: not in image cache"):
        cache.image("nope.png")
    with pytest.raises(FileNotFoundError, match="gone.png: image listed in the datalist not found"):
        UInt8ImageCache([{"image": str(tmp_path / "gone.png")}], 32, tmp_path / "cache")


def test_a_build_names_every_unreadable_image_at_once_and_leaves_no_cache(pngs, tmp_path):
    """One corrupt JPEG in 191K should not take one failed build per bad file to find them all."""
    bad = [tmp_path / "bad1.png", tmp_path / "bad2.png"]
    for path in bad:
        path.write_bytes(b"not an image")
    paths = [pngs[0], bad[0], pngs[1], bad[1]]
    with pytest.raises(ValueError) as err:
        UInt8ImageCache([{"image": str(p)} for p in paths], 32, tmp_path / "cache", batch_size=2)
    (report,) = (tmp_path / "cache").glob("images_32px_4_*_unreadable.csv")
    assert str(err.value).startswith(f"{bad[0]}: cannot identify image file")
    assert str(err.value).endswith(f"(2 of 4 listed images unreadable, all in {report}: fix them or leave them out "
                                   "of the datalist)")
    with open(report) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == [str(p) for p in bad] and all(str(p) in r["reason"] for p, r in zip(bad, rows))
    assert not list((tmp_path / "cache").glob("*.npy"))


def _stoppable_loader(monkeypatch, decoded, stop_at):
    """Record each path the cache build decodes; stop the build (as Ctrl-C would) at decode ``stop_at[0]``."""
    import cxrdoll.data.cache as cache_module

    class Loader(cache_module.LoadAnyImaged):
        def __call__(self, data):
            if len(decoded) == stop_at[0]:
                raise KeyboardInterrupt
            decoded.append(str(data["image"]))
            return super().__call__(data)

    monkeypatch.setattr(cache_module, "LoadAnyImaged", Loader)
    monkeypatch.setattr(cache_module, "CHECKPOINT_ROWS", 4)  # a progress record every second batch of 2


def _stopped_build(tmp_path, monkeypatch, seed):
    """Ten 48x40 PNGs, their cache built whole in ``whole/``, and a build into ``cache/`` stopped at the 8th
    decode (rows 0-5 written, 0-3 recorded). Returns the items, the whole cache, and the decode log and stop
    point of the stoppable loader (``stop_at[0] = -1``: no stop)."""
    rng = np.random.default_rng(seed)
    paths = [tmp_path / "img" / f"{i}.png" for i in range(10)]
    for p in paths:
        save_png_atomic(p, rng.integers(0, 256, size=(48, 40), dtype=np.uint8))
    items = [{"image": str(p)} for p in paths]
    whole = UInt8ImageCache(items, 32, tmp_path / "whole", batch_size=2)
    decoded: list[str] = []
    stop_at = [7]
    _stoppable_loader(monkeypatch, decoded, stop_at)
    with pytest.raises(KeyboardInterrupt):
        UInt8ImageCache(items, 32, tmp_path / "cache", batch_size=2)
    decoded.clear()
    return items, whole, decoded, stop_at


def test_a_stopped_build_resumes_from_its_record_and_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    """191K full-size JPEGs take over an hour to cache: a killed build must not start again from image 0."""
    items, whole, decoded, stop_at = _stopped_build(tmp_path, monkeypatch, seed=1)
    assert not (tmp_path / "cache" / whole.path.name).exists()
    stop_at[0] = -1
    cache = UInt8ImageCache(items, 32, tmp_path / "cache", batch_size=2)
    assert decoded == [item["image"] for item in items[4:]]
    assert cache.path.name == whole.path.name and cache.path.read_bytes() == whole.path.read_bytes()
    assert sorted(f.name for f in cache.path.parent.iterdir()) == [f"{cache.path.stem}.lock", cache.path.name]


def test_a_damaged_partial_file_is_rebuilt_and_its_record_dropped_first(tmp_path, monkeypatch):
    """A partial file numpy cannot read (its header damaged) is of no use: the build starts again instead of
    failing, and its stale record goes before the new partial file is made, so a stop before the first new
    record cannot resume on that record's rows (all zero in the new file)."""
    items, whole, decoded, stop_at = _stopped_build(tmp_path, monkeypatch, seed=2)
    (partial,) = (tmp_path / "cache").glob("*.partial")
    partial.write_bytes(b"not a numpy file")
    stop_at[0] = 1  # stopped in the first batch of the new build: nothing recorded yet
    with pytest.raises(KeyboardInterrupt):
        UInt8ImageCache(items, 32, tmp_path / "cache", batch_size=2)
    decoded.clear()
    stop_at[0] = -1
    cache = UInt8ImageCache(items, 32, tmp_path / "cache", batch_size=2)
    assert decoded == [item["image"] for item in items]
    assert cache.path.read_bytes() == whole.path.read_bytes()


def test_a_truncated_partial_file_is_rebuilt_not_resumed_on_zero_rows(tmp_path, monkeypatch):
    """A partial file cut short (a copy that stopped, a full disk in another tool) must not be extended with
    zeros that its record counts as built images: the build starts again."""
    items, whole, decoded, stop_at = _stopped_build(tmp_path, monkeypatch, seed=3)
    (partial,) = (tmp_path / "cache").glob("*.partial")
    os.truncate(partial, partial.stat().st_size - 3 * 32 * 32 * 10 // 4)  # into the recorded rows
    stop_at[0] = -1
    cache = UInt8ImageCache(items, 32, tmp_path / "cache", batch_size=2)
    assert decoded == [item["image"] for item in items]
    assert cache.path.read_bytes() == whole.path.read_bytes()


def test_a_run_that_waited_for_the_lock_uses_the_cache_built_meanwhile(pngs, tmp_path, monkeypatch):
    """Two runs sharing cache_dir: the one that waited must not decode every image again (an hour at scale) and
    replace the file the other run has memory-mapped."""
    import fcntl
    import shutil
    import threading

    import cxrdoll.data.cache as cache_module

    items = [{"image": str(p)} for p in pngs]
    built = UInt8ImageCache(items, 32, tmp_path / "elsewhere")
    target = tmp_path / "cache" / built.path.name  # the name depends on the images and size, not the folder
    target.parent.mkdir()
    decoded, waiting, found = [], threading.Event(), []

    class Loader(cache_module.LoadAnyImaged):
        def __call__(self, data):
            decoded.append(data["image"])
            return super().__call__(data)

    monkeypatch.setattr(cache_module, "LoadAnyImaged", Loader)
    monkeypatch.setattr(cache_module.logger, "info", lambda *args: waiting.set())  # "waiting for another process"
    with open(target.with_name(target.stem + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other run, building
        second = threading.Thread(target=lambda: found.append(UInt8ImageCache(items, 32, tmp_path / "cache")))
        second.start()
        assert waiting.wait(timeout=30)
        shutil.copy(built.path, target)  # the other run's build ends: its partial file renamed to the cache
    second.join(timeout=30)
    assert decoded == [] and found[0].path == target
    np.testing.assert_array_equal(found[0].array, built.array)


def test_an_empty_image_list_is_refused(tmp_path):
    with pytest.raises(ValueError, match="^cannot cache an empty image list$"):
        UInt8ImageCache([], 32, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def _global_rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_building_the_cache_leaves_the_global_random_generators_as_finding_it_built_does(pngs, tmp_path, num_workers):
    """A classifier run that built its cache trained otherwise than the same run (same seed) finding it built:
    the build's DataLoader drew its base seed from torch's global generator (with MONAI's, num_workers=0 also
    re-seeded it), shifting the network's initial weights, the shuffle and the augmentations' seeds."""
    items = [{"image": str(p)} for p in pngs]
    after = []
    for _ in ("builds", "finds it built"):
        seed_run(7)
        torch.rand(3)  # a generator already drawn from, as after the network's initialisation
        UInt8ImageCache(items, 32, tmp_path / "cache", num_workers=num_workers, batch_size=2)
        after.append(_global_rng_states())
    (torch_built, np_built, py_built), (torch_found, np_found, py_found) = after
    assert torch.equal(torch_built, torch_found)
    assert np.array_equal(np_built, np_found) and py_built == py_found


def test_unreadable_images_met_before_a_stop_are_still_reported_after_the_resume(pngs, tmp_path, monkeypatch):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    paths = [pngs[0], bad, *pngs[1:], pngs[0]]
    decoded: list[str] = []
    stop_at = [5]
    _stoppable_loader(monkeypatch, decoded, stop_at)
    with pytest.raises(KeyboardInterrupt):
        UInt8ImageCache([{"image": str(p)} for p in paths], 32, tmp_path / "cache", batch_size=2)
    decoded.clear()
    stop_at[0] = -1
    with pytest.raises(ValueError, match=r"bad.png: cannot identify image file .*\(1 of 7 listed images unreadable"):
        UInt8ImageCache([{"image": str(p)} for p in paths], 32, tmp_path / "cache", batch_size=2)
    assert len(decoded) == 3  # rows 4-6 only
    assert sorted(f.suffix for f in (tmp_path / "cache").iterdir()) == [".csv", ".lock"]  # no cache, no partial


DDP_CACHE = """
import datetime, json, pathlib, sys, time
import torch, torch.distributed as dist
import cxrdoll.data.cache as cache_module

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=3))
folder, delay = pathlib.Path(sys.argv[1]), float(sys.argv[2])
build = cache_module.UInt8ImageCache._build

def slow_build(self, *args):
    time.sleep(delay)
    build(self, *args)

cache_module.UInt8ImageCache._build = slow_build
items = [{"image": str(p)} for p in sorted((folder / "img").glob("*"))]
cache = cache_module.UInt8ImageCache(items, 32, folder / "cache")
dist.all_reduce(torch.ones(1))  # the default group still works
pathlib.Path(folder, f"rank{dist.get_rank()}.json").write_text(json.dumps(cache.array.tolist()))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("unreadable", [False, True])
def test_ddp_ranks_wait_for_a_cache_build_longer_than_the_default_groups_timeout(pngs, tmp_path, unreadable):
    """A 191K-image build takes ~78 min, NCCL's default timeout is 10 min: the waiting ranks timed out,
    torchrun killed rank 0 mid-build, and every retry started over. A failed build still ends every rank."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    if unreadable:
        (tmp_path / "img" / "bad.png").write_bytes(b"not an image")
    script = tmp_path / "ddp_cache.py"
    script.write_text(DDP_CACHE)
    began = time.monotonic()
    delay = "0" if unreadable else "6"  # seconds: twice the default group's timeout
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                             str(script), str(tmp_path), delay], capture_output=True, text=True, timeout=180,
                            cwd=Path(__file__).resolve().parents[2], env={**os.environ, "OMP_NUM_THREADS": "1"})
    if unreadable:
        assert result.returncode != 0 and "bad.png: cannot identify image file" in result.stderr
        assert time.monotonic() - began < 120  # not the 24 h wait
        return
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    alone = UInt8ImageCache([{"image": str(p)} for p in pngs], 32, tmp_path / "alone")
    assert ranks[0] == ranks[1] == alone.array.tolist()


def test_mask_labels_gives_nan_where_ignored():
    out = MaskLabelsd()({"label": [1.0, 0.0, 1.0], "label_mask": [1, 0, 1], "id": "x"})
    assert "label_mask" not in out
    assert out["label"][0].item() == 1.0 and math.isnan(out["label"][1].item()) and out["label"][2].item() == 1.0


def test_a_masked_label_does_not_make_an_observation_scorable():
    """U-Ignore writes an uncertain label as 0 with mask 0: the AUROC skips it, so Cardiomegaly
    with only positives among its known labels has no AUROC, however many masked zeros it has."""
    cardio = OBSERVATIONS.index("Cardiomegaly")

    def item(label, mask):
        labels, masks = [0.0] * 14, [0] * 14
        labels[cardio], masks[cardio] = label, mask
        return {"label": labels, "label_mask": masks}

    items = [item(1.0, 1), item(1.0, 1), item(0.0, 0)]
    with pytest.raises(ValueError, match=r"^v.json: no observation of auroc_mean_over \(Cardiomegaly\) has both "
                                         r".*; no observation does\."):
        scorable_validation(items, ["Cardiomegaly"], "v.json")
    items.append(item(0.0, 1))
    assert scorable_validation(items, ["Edema", "Cardiomegaly"], "v.json") is items
    with pytest.raises(ValueError, match=r"\(Edema\) has both .*; those that do: Cardiomegaly\. Set"):
        scorable_validation(items, ["Edema"], "v.json")


def _datalist(tmp_path, pngs, validation=True):
    item = {"image": str(pngs[0]), "id": "a", "patient": "p", "label": [0.0] * 14, "label_mask": [1] * 14,
            "raw_label": [None] * 14}
    path = tmp_path / "data" / "datalist.json"
    write_datalist(path, {"observations": list(OBSERVATIONS), "training": [item, {**item, "image": str(pngs[1])}],
                          "validation": [item] if validation else []})
    return path


def test_transform_chain_from_cache_drops_ragged_fields(pngs, tmp_path):
    items = classification_items(_datalist(tmp_path, pngs), "training")
    cache = UInt8ImageCache(items, 32, tmp_path / "cache")
    sample = classification_transforms(32, cache)(items[1])
    assert set(sample) == {"image", "label", "id"} and sample["image"].shape == (1, 32, 32)
    with pytest.raises(ValueError, match="holds 32px images, not 64px"):
        classification_transforms(64, cache)


def test_augmented_images_leave_as_plain_tensors(pngs, tmp_path):
    """MetaTensor inputs halved the GPU training rate (host-side metadata work in every layer)."""
    from monai.transforms import RandAffined

    items = classification_items(_datalist(tmp_path, pngs), "training")
    augment = [RandAffined(keys="image", prob=1.0, rotate_range=0.1, padding_mode="zeros")]
    sample = classification_transforms(32, UInt8ImageCache(items, 32, tmp_path / "cache"), augment)(items[0])
    assert type(sample["image"]) is torch.Tensor and sample["image"].shape == (1, 32, 32)


def test_datalist_lookup_and_errors(pngs, tmp_path):
    path = _datalist(tmp_path, pngs, validation=False)
    assert find_datalist(path.parent) == str(path)
    with pytest.raises(FileNotFoundError, match=r"no classification datalist \(looked for datalists/chexpert.json"):
        find_datalist(tmp_path)
    with pytest.raises(ValueError, match="'validation' list is empty"):
        classification_items(path, "validation")
    assert [i["id"] for i in image_items(pngs[0].parent)] == [f"{i}.png" for i in range(5)]
    with pytest.raises(FileNotFoundError, match="no .png/.jpg/.jpeg/.dcm/.dicom images found"):
        image_items(tmp_path / "data")


def test_dicom_and_png_share_one_loader_and_cache(shared_data, pngs, tmp_path):
    from cxrdoll.dicom.transforms import dicom_image_transforms
    from monai.transforms import Compose

    dicom = sorted((shared_data / "dicom").rglob("*.dcm"))[0]
    items = [{"image": str(dicom)}, {"image": str(pngs[0])}]
    cache = UInt8ImageCache(items, 32, tmp_path / "cache")
    expected = Compose(dicom_image_transforms(("image",), 32))({"image": str(dicom)})["image"]
    assert torch.max(torch.abs(cache.image(str(dicom)) - expected)).item() <= 0.5 / 255 + 1e-6
    direct = classification_transforms(32)({"image": str(dicom), "label": [0.0] * 14, "label_mask": [1] * 14})
    torch.testing.assert_close(direct["image"], expected)


def test_fill_one_batch_counts_each_process_share(monkeypatch):
    items = [{"image": f"{i}.png"} for i in range(10)]
    assert fill_one_batch(items, 10, "d.json") is items
    with pytest.raises(ValueError, match=r"d.json: the training split has 10 images, fewer than one batch of batch_size=11"):
        fill_one_batch(items, 11, "d.json")
    monkeypatch.setattr(idist, "get_world_size", lambda: 4)  # DistributedSampler pads 10 to 3 per process
    assert fill_one_batch(items, 3, "d.json") is items
    with pytest.raises(ValueError, match=r"10 images \(3 per process on 4\), .* set batch_size to at most 3$"):
        fill_one_batch(items, 4, "d.json")


def test_compact_items_give_the_datalist_items_training_reads(pngs, tmp_path):
    from cxrdoll.data.classification import CompactItems
    from cxrdoll.data.datalist import load_classification_datalist

    path = _datalist(tmp_path, pngs)
    raw = load_classification_datalist(path)["training"]
    items = classification_items(path, "training")
    assert isinstance(items, CompactItems) and len(items) == len(raw) == 2
    keys = ("image", "id", "label", "label_mask")
    assert [items[i] for i in range(2)] == [{k: item[k] for k in keys} for item in raw]
    assert items[-1] == items[1] and items[:1] == [items[0]] and list(items) == items[0:2]
    assert items._label.dtype == np.uint8 and items._image.dtype.kind == "S"  # arrays, not per-item objects
    unnamed = CompactItems([{"image": "é/a.png", "label": [1] * 14, "label_mask": [0] * 14}])
    assert unnamed[0] == {"image": "é/a.png", "label": [1] * 14, "label_mask": [0] * 14}
