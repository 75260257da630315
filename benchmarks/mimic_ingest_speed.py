"""How fast ``prepare-mimic`` ingests MIMIC-CXR-JPG-sized CSVs (377,110 images, 227,827 studies).

Writes gzipped metadata, split and CheXpert-label CSVs shaped like MIMIC-CXR-JPG 2.0.0's (row counts,
view mix, split sizes and label value mix; seeded; no images), then times the command end to end (a
fresh ``python -m cxrdoll`` process, ``--no-check-files``) and the library call in process.

    python benchmarks/mimic_ingest_speed.py --smoke    # 1 repeat
    python benchmarks/mimic_ingest_speed.py            # 3 repeats (median)

Results: benchmarks/results/mimic_ingest_speed_cpu[_smoke].{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "benchmarks"))

from chexpert_ingest_speed import VALUE_PROBS, cli_record, run_line, run_record, time_cli  # noqa: E402
from cxrdoll.constants import OBSERVATIONS  # noqa: E402
from cxrdoll.data.mimic import build_mimic_datalist  # noqa: E402
from cxrdoll.io import write_json_atomic, write_text_atomic  # noqa: E402

IMAGES, STUDIES, SUBJECTS = 377_110, 227_827, 65_379  # MIMIC-CXR-JPG 2.0.0
# ViewPosition shares of MIMIC-CXR-JPG's metadata (AP, PA, LATERAL, LL, other incl. blank), approximate.
VIEWS = ("AP", "PA", "LATERAL", "LL", "")
VIEW_MEANINGS = ("antero-posterior", "postero-anterior", "lateral", "left lateral", "")  # ViewCodeSequence's, per view
VIEW_PROBS = (0.39, 0.25, 0.22, 0.09, 0.05)
SPLIT_PROBS = {"train": 0.978, "validate": 0.008, "test": 0.014}


def _write_gz(path: Path, header: list[str], rows: list[str]) -> None:
    path.write_bytes(gzip.compress(("\n".join([",".join(header), *rows]) + "\n").encode(), compresslevel=6))


def write_mimic_like_csvs(root: Path, images: int, studies: int, subjects: int, seed: int = 0) -> dict:
    """Seeded metadata, split and label CSVs (.csv.gz) under ``root``; returns their counts."""
    rng = np.random.default_rng(seed)
    subject_pool = 10_000_000 + rng.choice(9_000_000, size=subjects, replace=False)
    subject_of_study = np.sort(rng.choice(subject_pool, size=studies))
    study_ids = 50_000_000 + rng.permutation(studies)
    study_of_image = np.sort(rng.integers(0, studies, size=images))
    views = rng.choice(len(VIEWS), size=images, p=VIEW_PROBS)
    split_of_subject = {s: rng.choice(list(SPLIT_PROBS), p=list(SPLIT_PROBS.values())) for s in np.unique(subject_of_study)}
    meta, split = [], []
    for i in range(images):
        study = study_of_image[i]
        dicom_id = f"{i:08x}-{rng.integers(16**8):08x}-{i * 7919 % 16**8:08x}-{study:08x}-{i % 97:08x}"
        subject, study_id = subject_of_study[study], study_ids[study]
        meta.append(f"{dicom_id},{subject},{study_id},CHEST (PA AND LAT),{VIEWS[views[i]]},3056,2544,21800506,213014.531,"
                    f"CHEST (PA AND LAT),{VIEW_MEANINGS[views[i]]},Erect")
        split.append(f"{dicom_id},{study_id},{subject},{split_of_subject[subject]}")
    _write_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz",
              ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
               "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
               "PatientOrientationCodeSequence_CodeMeaning"], meta)
    _write_gz(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split)
    cells = rng.choice(4, size=(studies, len(OBSERVATIONS)), p=(*VALUE_PROBS, 1 - sum(VALUE_PROBS)))
    text = np.array(["1.0", "0.0", "-1.0", ""])[cells]
    labels = [f"{subject_of_study[j]},{study_ids[j]}," + ",".join(text[j]) for j in range(studies)]
    _write_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *sorted(OBSERVATIONS)], labels)
    return {"images": images, "studies": studies, "subjects": int(len(split_of_subject)),
            "csv_gz_mb": round(sum(f.stat().st_size for f in root.glob("*.csv.gz")) / 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one repeat instead of three")
    parser.add_argument("--out-dir", type=Path, default=PROJECT / "benchmarks" / "results")
    args = parser.parse_args()
    repeats = 1 if args.smoke else 3

    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "mimic", Path(tmp) / "datalist.json"
        root.mkdir()
        shape = write_mimic_like_csvs(root, IMAGES, STUDIES, SUBJECTS)
        cli = [time_cli(["prepare-mimic", "--root", str(root), "--out", str(out), "--no-check-files"]) for _ in range(repeats)]
        in_process = []
        for _ in range(repeats):
            start = time.process_time()
            result = build_mimic_datalist(root, check_files=False)
            in_process.append(time.process_time() - start)
        datalist_mb = out.stat().st_size / 1e6

    results = {
        **run_record("mimic_ingest_speed", args.smoke),
        "csvs": shape,
        "repeats": repeats,
        **cli_record(cli),
        "build_cpu_median_s": statistics.median(in_process),
        "datalist_items": len(result.label),
        "datalist_training": result.n_training,
        "datalist_mb": round(datalist_mb, 1),
        "load_average_1min": os.getloadavg()[0],
    }
    name = f"mimic_ingest_speed_cpu{'_smoke' if args.smoke else ''}"
    write_json_atomic(args.out_dir / f"{name}.json", results)
    write_text_atomic(args.out_dir / f"{name}.md", _markdown(results))
    print(_markdown(results))
    return 0


def _markdown(r: dict) -> str:
    wall, cpu = r["cli_no_check_files_wall_s"]["median"], r["cli_no_check_files_cpu_s"]["median"]
    c = r["csvs"]
    return "\n".join([
        f"# prepare-mimic ingest speed ({r['mode']})",
        "",
        run_line(r),
        "",
        f"Generated CSVs (gzipped, {c['csv_gz_mb']} MB): {c['images']:,} images, {c['studies']:,} studies, "
        f"{c['subjects']:,} subjects, MIMIC-CXR-JPG's view and split mix; datalist (frontal views, official split): "
        f"{r['datalist_items']:,} items ({r['datalist_training']:,} training), {r['datalist_mb']} MB.",
        "",
        "| measurement | wall s | CPU s |",
        "|---|---|---|",
        f"| `python -m cxrdoll prepare-mimic ... --no-check-files`, whole process (median of {r['repeats']}) | {wall:.2f} | {cpu:.2f} |",
        f"| in process: `build_mimic_datalist` (read 3 CSVs, join, split, policy) | | {r['build_cpu_median_s']:.2f} |",
        "",
        "No target; for comparison, prepare-chexpert's is a few seconds for CheXpert's 223,414 rows. No GPU is involved.",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
