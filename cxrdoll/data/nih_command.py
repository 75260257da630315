"""``python -m cxrdoll prepare-nih``: NIH ChestX-ray14 CSV, split lists and images -> classification datalist JSON."""

from __future__ import annotations

import argparse
import time

from cxrdoll.data.chexpert_command import add_datalist_arguments, label_policy, patient_split, write_and_report
from cxrdoll.data.nih import VALIDATION_SOURCES, build_nih_datalist

HELP = "Turn an NIH ChestX-ray14 copy (Data_Entry_2017 CSV, split lists, images) into a classification datalist with label policies."

EPILOG = """\
examples:
  python -m cxrdoll prepare-nih --root /data/NIH-ChestX-ray14 --out nih.json
  python -m cxrdoll prepare-nih --root /data/NIH-ChestX-ray14 --val-fraction 0.2 --seed 1 \\
      --no-check-files --out nih.json

--root holds Data_Entry_2017_v2020.csv (or the older Data_Entry_2017.csv), train_val_list.txt,
test_list.txt and the images, found by one walk of --root (images_001/images/ ... as downloaded, or
images/). NIH's findings are mapped onto CheXpert's observations; the three NIH does not label
(Enlarged Cardiomediastinum, Fracture, Support Devices) are blank, masked by the default --blank
ignore. train_val_list's images are split by patient (--val-fraction, --seed); test_list's images,
images in neither list and views other than PA/AP are left out and counted. --validation test-list
makes test_list's images the validation list instead, to label the boxed images (prepare-nih-boxes).
An id is the image's path under --root as found; with --no-check-files (no walk) it is
images/<Image Index>. Rows in error messages are numbered like a spreadsheet (header = row 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add = parser.add_argument
    add("--root", required=True, metavar="DIR", help="NIH ChestX-ray14 folder holding the CSV, the split lists and the images")
    add("--out", required=True, metavar="JSON", help="datalist JSON to write")
    add("--validation", choices=VALIDATION_SOURCES, default="patient",
        help="the validation list: patient = train_val_list's patients split by --val-fraction and --seed; test-list = "
             "test_list.txt's images (all of train_val_list trains), for labelling the boxed images prepare-nih-boxes "
             "scores: a model selected on it has seen the test set (default: patient)")
    add_datalist_arguments(parser, blank="ignore", blank_meaning="the 3 observations NIH does not label: unknown, not negative")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    val_fraction, seed = patient_split(args, args.validation == "patient", "--validation test-list")
    result = build_nih_datalist(
        args.root,
        views=args.views,
        policy=label_policy(args),
        val_fraction=val_fraction,
        seed=seed,
        check_files=not args.no_check_files,
        allow_missing=args.allow_missing,
        validation=args.validation,
    )
    print(f"labels read from {result.meta['policy']['labels_csv']}")
    return write_and_report(result, args.out, start)
