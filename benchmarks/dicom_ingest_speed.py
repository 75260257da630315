"""How fast ``ingest-dicom`` turns full-size clinical radiographs into images, by worker count.

Links N copies of the largest DICOM file in the shared test data (a 1955x1841 15-bit CR) into a
folder and times ``python -m cxrdoll ingest-dicom`` end to end (a fresh process, as a user runs
it; ``--keep-duplicates``, since the copies share one SOP Instance UID) at the original size and
at ``--size 512``, for each worker count. Reports from every worker count are compared byte for
byte. A 224K-image archive is a day's work in one process at 0.4 s a file, so this is the rate
that decides whether a CheXpert-sized DICOM set is practical.

    python benchmarks/dicom_ingest_speed.py --smoke    # 8 files; 0 (in the command's process), 1 and 2 workers
    python benchmarks/dicom_ingest_speed.py            # 60 files; 0, 1 and 2 workers (this machine's cores)

Results: benchmarks/results/dicom_ingest_speed[_cpu_smoke].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from benchmarks.common import SHARED_DICOM, cpu_model  # noqa: E402
from cxrdoll.io import write_json_atomic, write_text_atomic  # noqa: E402


def largest_dicom(root: Path) -> Path:
    files = [p for p in root.rglob("*.dcm") if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{root}: no .dcm files (the shared test data)")
    return max(files, key=lambda p: p.stat().st_size)


def time_ingest(in_dir: Path, out_dir: Path, workers: int, size: int) -> float:
    command = [sys.executable, "-m", "cxrdoll", "ingest-dicom", "--in", str(in_dir), "--out", str(out_dir),
               "--workers", str(workers), "--size", str(size), "--keep-duplicates"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=PROJECT)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="8 files")
    parser.add_argument("--files", type=int, default=None, help="copies to ingest (default 60; 8 with --smoke)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="worker counts to time (0: in the command's own process)")
    parser.add_argument("--dicom-dir", type=Path, default=SHARED_DICOM)
    parser.add_argument("--out", default=None, help="results JSON (a markdown table is written beside it)")
    args = parser.parse_args()
    n = args.files or (8 if args.smoke else 60)
    source = largest_dicom(args.dicom_dir)
    rows, reports = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        in_dir = Path(tmp) / "in"
        in_dir.mkdir()
        for i in range(n):
            (in_dir / f"f{i:04d}.dcm").symlink_to(source.resolve())
        for size in (0, 512):
            for workers in args.workers:
                out = Path(tmp) / f"out_{size}_{workers}"
                seconds = time_ingest(in_dir, out, workers, size)
                reports[(size, workers)] = (out / "report.csv").read_bytes()
                rows.append({"size": size or "original", "workers": workers, "seconds": round(seconds, 2),
                             "files_per_s": round(n / seconds, 2)})
    identical = all(reports[(s, w)] == reports[(s, args.workers[0])] for s, w in reports)
    result = {
        "device": f"CPU ({cpu_model()}, {os.cpu_count()} cores, 1-min load {os.getloadavg()[0]:.2f})",
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source.name, "files": n, "smoke": args.smoke, "runs": rows,
        "reports_identical_across_worker_counts": identical,
    }
    name = "dicom_ingest_speed_cpu_smoke" if args.smoke else "dicom_ingest_speed"
    out_json = Path(args.out) if args.out else PROJECT / "benchmarks" / "results" / f"{name}.json"
    write_json_atomic(out_json, result)
    table = [f"| {r['size']} | {r['workers']} | {r['seconds']} | {r['files_per_s']} |" for r in rows]
    write_text_atomic(out_json.with_suffix(".md"), "\n".join([
        f"# DICOM ingest speed{' (CPU smoke)' if args.smoke else ''}", "",
        f"{result['device']}, Python {result['python']}, {result['date']}", "",
        f"{n} links to {source.name} (the largest shared DICOM file), `python -m cxrdoll ingest-dicom` end to end "
        f"(process start included); reports identical across worker counts: {identical}", "",
        "| size | workers | seconds | files/s |", "|---|---|---|---|", *table, ""]))
    print(out_json.with_suffix(".md").read_text())
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
