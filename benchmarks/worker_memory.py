"""How much private memory each DataLoader worker gains over one epoch of a CheXpert-sized datalist.

Workers are forked and share the parent's pages until something writes to them. The classifier's
training items were a list of dicts: reference counts and the garbage collector's passes write to
every dict and label list, so each worker ended with its own copy. ``CompactItems`` (what
``classification_items`` returns) keeps a section in four numpy arrays. This script reads one
shuffled epoch of N synthetic items through the classifier's label transforms (no images: the
items alone) with both holders and records each worker's Private_Dirty memory (Linux
``/proc/<pid>/smaps_rollup``) after the first batch and after the epoch.

    python benchmarks/worker_memory.py --smoke     # 20K items
    python benchmarks/worker_memory.py             # 191K items, CheXpert's training split

Results: benchmarks/results/worker_memory[_cpu_smoke].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import numpy as np
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from benchmarks.common import device_name  # noqa: E402
from cxrdoll.data.classification import CompactItems, KeepKeysd, MaskLabelsd  # noqa: E402
from cxrdoll.io import write_json_atomic, write_text_atomic  # noqa: E402


def synthetic_items(n: int, seed: int = 0) -> list[dict]:
    """Items shaped as ``prepare-chexpert`` writes them (paths, ids, labels, masks, raw labels, patient)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, 14)).tolist()
    masks = rng.integers(0, 2, size=(n, 14)).tolist()
    return [{"image": f"/data/CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg",
             "id": f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg",
             "patient": f"patient{i:05d}", "label": labels[i], "label_mask": masks[i],
             "raw_label": [None if m == 0 else v for v, m in zip(labels[i], masks[i])]} for i in range(n)]


def private_dirty_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Private_Dirty for process {pid}")


def one_epoch(items, workers: int, batch_size: int) -> dict:
    """Private memory of each worker after its first batch and after a shuffled epoch."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose

    dataset = Dataset(items, Compose([MaskLabelsd(), KeepKeysd(keys=("label", "id"))]))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True, persistent_workers=True,
                        generator=torch.Generator().manual_seed(0))
    batches = iter(loader)
    next(batches)
    pids = [w.pid for w in batches._workers]
    first = [private_dirty_mb(p) for p in pids]
    count = 1 + sum(1 for _ in batches)
    last = [private_dirty_mb(p) for p in pids]
    return {"batches": count, "after_first_batch_mb": [round(v, 1) for v in first],
            "after_epoch_mb": [round(v, 1) for v in last], "mean_epoch_growth_mb": round(
                float(np.mean(last) - np.mean(first)), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20K items")
    parser.add_argument("--n", type=int, default=None, help="items (default 191,027; 20,000 with --smoke)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=None, help="results JSON (a markdown table is written beside it)")
    args = parser.parse_args()
    n = args.n or (20_000 if args.smoke else 191_027)
    items = synthetic_items(n)
    result = {
        "device": device_name(torch.device("cpu")), "python": platform.python_version(), "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "items": n, "workers": args.workers, "batch_size": args.batch_size, "smoke": args.smoke,
        "list_of_dicts": one_epoch(items, args.workers, args.batch_size),
        "compact_items": one_epoch(CompactItems(items), args.workers, args.batch_size),
    }
    name = "worker_memory_cpu_smoke" if args.smoke else "worker_memory"
    out = Path(args.out) if args.out else PROJECT / "benchmarks" / "results" / f"{name}.json"
    write_json_atomic(out, result)
    rows = [f"| {label} | {', '.join(map(str, r['after_first_batch_mb']))} | {', '.join(map(str, r['after_epoch_mb']))} "
            f"| {r['mean_epoch_growth_mb']} |" for label, r in (("list of dicts (before)", result["list_of_dicts"]),
                                                               ("CompactItems", result["compact_items"]))]
    write_text_atomic(out.with_suffix(".md"), "\n".join([
        f"# DataLoader worker memory{' (CPU smoke)' if args.smoke else ''}", "",
        f"{result['device']}, Python {result['python']}, torch {result['torch']}, {result['date']}", "",
        f"{n:,} classification items, {args.workers} workers, batch {args.batch_size}, one shuffled epoch "
        "(label transforms only, no images); Private_Dirty per worker, MB", "",
        "| items held as | after the first batch | after the epoch | mean growth over the epoch |",
        "|---|---|---|---|", *rows, ""]))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
