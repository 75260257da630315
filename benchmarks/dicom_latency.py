"""Latency from a DICOM file to its DICOM SEG written, per image (issue: CPU target <= 1.5 s at 512^2).

Each image goes through exactly what the deploy app runs per case: read + decode + VOI
(``cxrdoll.dicom``), bundle inference at the bundle's input size (``SegBundle.predict``), and the
SEG build + atomic write (``cxrdoll.dicom.seg.write_seg``). Without ``--bundle`` the network is a
stand-in with the adapter bundle's architecture (``build_downstream_segmenter``, adapters mode,
5 classes) and random weights, exported to TorchScript: latency does not depend on weight values.

    python benchmarks/dicom_latency.py --smoke            # 5 images, 1 pass, CPU
    python benchmarks/dicom_latency.py                    # every shared DICOM, 2 passes
    python benchmarks/dicom_latency.py --device cuda      # the same on the GPU (dicom_latency_gpu)

Results: benchmarks/results/dicom_latency[_gpu | _cpu_smoke].{json,md} (``--out`` to change).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from benchmarks.common import SHARED_DICOM, device_name  # noqa: E402
from cxrdoll.deploy.export import export_seg_bundle  # noqa: E402
from cxrdoll.deploy.seg_bundle import SegBundle  # noqa: E402
from cxrdoll.dicom.loader import dataset_to_image, read_dataset  # noqa: E402
from cxrdoll.dicom.seg import write_seg  # noqa: E402
from cxrdoll.io import write_json_atomic, write_text_atomic  # noqa: E402

TARGET_CPU_S = 1.5
STAND_IN_CLASSES = ["left lung", "right lung", "heart", "left clavicle", "right clavicle"]


def stand_in_bundle(root: Path, encoder: str, size: int) -> Path:
    from cxrdoll.networks import build_downstream_segmenter

    torch.manual_seed(0)
    network = build_downstream_segmenter(encoder, len(STAND_IN_CLASSES), mode="adapters")
    return export_seg_bundle(network, root, STAND_IN_CLASSES, size, name=f"stand-in {encoder} adapters")


def time_one(path: Path, bundle: SegBundle, out: Path) -> dict:
    """Seconds per stage for one file, synchronising the device so GPU work is counted."""
    sync = torch.cuda.synchronize if bundle.device.type == "cuda" else (lambda: None)
    c0, t0 = time.process_time(), time.perf_counter()
    ds = read_dataset(path)
    image = dataset_to_image(ds, source=str(path))
    t1 = time.perf_counter()
    masks = bundle.predict(image.array)
    sync()
    t2 = time.perf_counter()
    write_seg(out, ds, masks, bundle.channel_names)
    t3, c3 = time.perf_counter(), time.process_time()
    return {"file": path.name, "rows": int(ds.Rows), "cols": int(ds.Columns),
            "load_s": t1 - t0, "infer_s": t2 - t1, "seg_s": t3 - t2, "total_s": t3 - t0, "cpu_s": c3 - c0}


def summarise(runs: list[dict], key: str) -> dict:
    values = np.array([r[key] for r in runs])
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="5 images, 1 pass (CPU)")
    parser.add_argument("--in", dest="in_dir", type=Path, default=SHARED_DICOM, help="folder of CR/DX DICOM files")
    parser.add_argument("--bundle", type=Path, help="segmentation bundle (default: stand-in network)")
    parser.add_argument("--encoder", default="densenet121", help="stand-in encoder (the adapter bundle's default)")
    parser.add_argument("--size", type=int, default=512, help="stand-in network input size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--passes", type=int, help="passes over the images (default 2; 1 with --smoke)")
    parser.add_argument("--out", type=Path, help="results path without extension")
    args = parser.parse_args(argv)

    files = sorted(p for p in args.in_dir.rglob("*.dcm"))
    if not files:
        raise SystemExit(f"{args.in_dir}: no .dcm files")
    if args.smoke:
        files = files[:: max(1, len(files) // 5)][:5]
    passes = args.passes or (1 if args.smoke else 2)
    device_tag = "" if args.device == "cpu" else "_gpu"
    default_name = f"dicom_latency_{args.device}_smoke" if args.smoke else f"dicom_latency{device_tag}"
    out = args.out or PROJECT / "benchmarks" / "results" / default_name

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle_dir = args.bundle or stand_in_bundle(tmp / "bundle", args.encoder, args.size)
        bundle = SegBundle.load(bundle_dir, device=args.device)
        time_one(files[0], bundle, tmp / "warmup.dcm")  # first call pays TorchScript/codec set-up
        load_before = os.getloadavg()[0]
        runs = [time_one(f, bundle, tmp / "seg.dcm") | {"pass": p} for p in range(passes) for f in files]
        load_after = os.getloadavg()[0]

    total = summarise(runs, "total_s")
    result = {
        "device": device_name(bundle.device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "median_s_per_image": total["median"],
        "p95_s_per_image": total["p95"],
        "max_s_per_image": total["max"],
        # CPU time of this process (all threads): what the work costs, whatever else runs beside it.
        "median_cpu_s_per_image": summarise(runs, "cpu_s")["median"],
        "target_cpu_s": TARGET_CPU_S,
        "stages_median_s": {k: summarise(runs, k)["median"] for k in ("load_s", "infer_s", "seg_s")},
        "network": str(args.bundle) if args.bundle else f"stand-in {args.encoder} + U-Net decoder + adapters, 5 classes, random weights",
        "network_input": list(bundle.spatial_shape),
        "images": len(files),
        "passes": passes,
        "smoke": args.smoke,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_1min": [load_before, load_after],
        "note": (f"1-min load average {load_before:.2f} before and {load_after:.2f} after the timed passes on "
                 f"{os.cpu_count()} CPUs (this run alone loads them to about {torch.get_num_threads()}); under "
                 "contention wall times are upper bounds"),
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), result)
    write_text_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    stages = r["stages_median_s"]
    host = "" if r["device"].startswith("CPU") else f" ({r['torch_threads']} torch threads, {r['cpu_count']} CPUs on the host)"
    slowest = max(r["runs"], key=lambda run: run["total_s"])
    lines = [
        "# DICOM file -> DICOM SEG latency",
        "",
        f"- device: {r['device']}{host}, torch {r['torch']}, {r['date']}",
        f"- network: {r['network']}, input {r['network_input'][0]}x{r['network_input'][1]}",
        f"- images: {r['images']} x {r['passes']} pass(es){' (smoke)' if r['smoke'] else ''}",
        f"- {r['note']}",
        "",
        "| per image | median s | p95 s |",
        "|---|---|---|",
        f"| total (file -> SEG written) | {r['median_s_per_image']:.3f} | {r['p95_s_per_image']:.3f} |",
        f"| read + decode + VOI | {stages['load_s']:.3f} | |",
        f"| inference | {stages['infer_s']:.3f} | |",
        f"| SEG build + write | {stages['seg_s']:.3f} | |",
        f"| process CPU time, all threads (total) | {r['median_cpu_s_per_image']:.3f} | |",
        "",
        f"Slowest image: {slowest['total_s']:.3f} s ({slowest['file']}, pass {slowest['pass'] + 1}, "
        f"inference {slowest['infer_s']:.3f} s).",
        "",
    ]
    if r["device"].startswith("CPU"):
        lines += [f"CPU target: <= {r['target_cpu_s']} s per image; median "
                  f"{'met' if r['median_s_per_image'] <= r['target_cpu_s'] else 'NOT met'}, "
                  f"p95 {'met' if r['p95_s_per_image'] <= r['target_cpu_s'] else 'NOT met'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
