"""How fast ``python -m cxrdoll synth`` makes phantoms on one core (the issue asks >= 50 images/s at 256²).

Times, in one process with BLAS limited to one thread: rendering alone (``make_phantom`` with the
dataset's finding mix) and the whole writer (render + JPEG + truth ``.npz`` + CSV, organ and lesion
PNGs) at 256 and 128 pixels. Reports wall and CPU time; on a shared machine CPU time is the
fairer single-core figure, and the load average is recorded with the numbers.

    python benchmarks/synth_speed.py --smoke    # 40 images per size
    python benchmarks/synth_speed.py            # 400 images per size

Results: benchmarks/results/synth_speed[_cpu_smoke].{json,md}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, as the target says; set before numpy loads
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from cxrdoll.data.synth.phantom import make_phantom, sample_findings  # noqa: E402
from cxrdoll.data.synth.writer import SynthConfig, write_synthetic  # noqa: E402
from cxrdoll.io import write_json_atomic, write_text_atomic  # noqa: E402

TARGET = 50.0  # images per second at 256 on one core


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_render(n: int, size: int) -> dict:
    make_phantom(np.random.default_rng(0), size, [])  # warm caches

    def run() -> None:
        for i in range(n):
            rng = np.random.default_rng(i)
            make_phantom(rng, size, sample_findings(rng))

    wall, cpu = _timed(run)
    return {"images": n, "wall_s": wall, "cpu_s": cpu, "images_per_s_wall": n / wall, "images_per_s_cpu": n / cpu}


def bench_writer(n: int, size: int) -> dict:
    organs = lesions = max(1, n // 10)
    cfg = SynthConfig(n=n, size=size, seed=0, n_organs=organs, n_lesions=lesions)
    with tempfile.TemporaryDirectory() as tmp:
        summary = {}
        wall, cpu = _timed(lambda: summary.update(write_synthetic(cfg, Path(tmp))))
    images = summary["rows"]["train"] + summary["rows"]["valid"] + organs + lesions
    return {"images": images, "wall_s": wall, "cpu_s": cpu, "images_per_s_wall": images / wall,
            "images_per_s_cpu": images / cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="40 images per size instead of 400")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results")
    args = parser.parse_args()
    n = 40 if args.smoke else 400
    results = {}
    for size in (256, 128):
        results[str(size)] = {"render": bench_render(n, size), "writer": bench_writer(n, size)}
    load = os.getloadavg()
    record = {
        "benchmark": "synth_speed", "mode": "smoke" if args.smoke else "full",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU, one process, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']} ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)",
        "python": platform.python_version(), "numpy": np.__version__,
        "load_average_1_5_15": [round(x, 2) for x in load],
        "target_images_per_s_at_256": TARGET, "results": results,
    }
    name = "synth_speed_cpu_smoke" if args.smoke else "synth_speed"
    write_json_atomic(args.out / f"{name}.json", record)
    lines = [f"# Synthetic phantom speed ({record['mode']})", "",
             f"{record['date']}, {record['device']}, Python {record['python']}, numpy {record['numpy']}.",
             f"Load average during the run: {record['load_average_1_5_15']} (a shared machine: wall time "
             "includes waiting for a core; CPU time is this process's own).", "",
             "| size | stage | images | wall s | CPU s | images/s (wall) | images/s (CPU) |", "|---|---|---|---|---|---|---|"]
    for size, stages in results.items():
        for stage, r in stages.items():
            lines.append(f"| {size} | {stage} | {r['images']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                         f"{r['images_per_s_wall']:.1f} | {r['images_per_s_cpu']:.1f} |")
    lines += ["", f"Target: {TARGET:.0f} images/s at 256² on one core (writer stage)."]
    write_text_atomic(args.out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
