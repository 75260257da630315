"""``python -m cxrdoll ingest-dicom --in DIR --out DIR``: clinical DICOM to images + datalist + report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cxrdoll.argtypes import non_negative_int
from cxrdoll.dicom.ingest import FORMATS, IngestOptions, ingest_folder
from cxrdoll.dicom.loader import VOI_MODES

HELP = "ingest a folder of chest CR/DX DICOM files into PNG/NIfTI images, a MONAI datalist and a CSV report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="in_dir", required=True, help="folder of DICOM files (searched recursively)")
    parser.add_argument("--out", dest="out_dir", required=True, help="output folder: images/, datalist.json, report.csv; one holding an earlier "
                             "run's outputs is refused unless --overwrite")
    parser.add_argument("--format", choices=FORMATS, default="png", help="image format: PNG is 8-bit, NIfTI float32 (default: %(default)s)")
    parser.add_argument("--size", type=non_negative_int, default=0, help="resize to SIZE x SIZE pixels (area interpolation); 0 keeps the original size (default: %(default)s)")
    parser.add_argument("--voi", choices=VOI_MODES, default="auto", help="intensity mapping (VOI): auto = the file's VOI LUT, else its window, else min-max; lut and window "
                             "force that mapping (a file without it is skipped); none = min-max (default: %(default)s)")
    parser.add_argument("--views", choices=("frontal", "all"), default="frontal",
                        help="frontal keeps PA, AP and unknown views; all keeps laterals too (default: %(default)s)")
    parser.add_argument("--deidentify", action="store_true",
                        help="pseudonymous output names, listed in pseudonym order; no input paths or UIDs in the "
                             "outputs or printed; images flagged BurnedInAnnotation YES skipped")
    parser.add_argument("--pseudonym-key-file", type=Path, metavar="FILE",
                        help="with --deidentify: a secret whose HMAC makes the pseudonyms, so that a path holding an "
                             "identifier (an MRN as folder name) cannot be recovered by hashing guesses; keep it "
                             "outside OUT, and reuse it for the same names on every run")
    parser.add_argument("--keep-duplicates", action="store_true", help="keep files repeating a SOP Instance UID")
    parser.add_argument("--overwrite", action="store_true",
                        help="remove an earlier (or killed) run's images/, datalist.json, report.csv and journal in "
                             "--out first; without it a killed run with the same settings is resumed")
    parser.add_argument("--workers", type=non_negative_int, default=min(8, os.cpu_count() or 1),
                        help="processes reading files (default: the CPU count, at most 8). A file whose reading kills "
                             "its process is skipped and reported; 0 reads in this process, without that guard")


def read_key(path: Path, deidentify: bool) -> bytes:
    """The pseudonym secret: the file's bytes without a trailing newline."""
    if not deidentify:
        raise ValueError("--pseudonym-key-file makes pseudonyms: give --deidentify too")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pseudonym key file not found")
    key = path.read_bytes().rstrip(b"\r\n")
    if not key:
        raise ValueError(f"{path}: pseudonym key file is empty")
    return key


def run(args: argparse.Namespace) -> int:
    options = IngestOptions(
        fmt=args.format, size=args.size, voi=args.voi, views=args.views,
        deidentify=args.deidentify, keep_duplicates=args.keep_duplicates,
        pseudonym_key=None if args.pseudonym_key_file is None else read_key(args.pseudonym_key_file, args.deidentify),
    )
    if args.deidentify and options.pseudonym_key is None:
        print("warning: --deidentify without --pseudonym-key-file: each pseudonym is a plain SHA-256 of the input's "
              "relative path, which anyone who can guess the paths (MRN folders) can recompute; give a secret key "
              "file for pseudonyms that cannot be traced back", file=sys.stderr)
    rows = ingest_folder(args.in_dir, args.out_dir, options, overwrite=args.overwrite, workers=args.workers,
                         progress=None)
    ok = sum(row.status == "ok" for row in rows)
    print(f"ingested {ok} of {len(rows)} files ({len(rows) - ok} skipped); report: {args.out_dir}/report.csv")
    if ok == 0:  # a script's next step (a datalist to train on) would start on nothing; reasons are in the report
        under = "" if args.deidentify else f" under {args.in_dir}"  # --deidentify prints no input path (an MRN folder)
        print(f"error: no file{under} was ingested; why each was skipped: {args.out_dir}/report.csv", file=sys.stderr)
        return 1
    return 0
