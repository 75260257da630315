"""``python -m cxrdoll prepare-mimic``: MIMIC-CXR-JPG CSVs -> classification datalist JSON."""

from __future__ import annotations

import argparse
import time

from cxrdoll.data.chexpert_command import add_datalist_arguments, label_policy, patient_split, write_and_report
from cxrdoll.data.mimic import LABEL_CSVS, SPLIT_METHODS, build_mimic_datalist

HELP = "Turn a MIMIC-CXR-JPG copy (metadata, split and label CSVs) into a classification datalist with label policies."

EPILOG = """\
examples:
  python -m cxrdoll prepare-mimic --root /data/mimic-cxr-jpg/2.1.0 --out mimic.json
  python -m cxrdoll prepare-mimic --root /data/mimic-cxr-jpg/2.1.0 --labeler negbio --split patient \\
      --uncertain-per "Atelectasis=ones,Edema=ones" --views all --out mimic.json

--root holds files/ and mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv (or .csv.gz). Labels are per
study and reach every image of the study. ViewPosition PA/AP is frontal, LATERAL/LL lateral (where it is
blank, ViewCodeSequence_CodeMeaning's postero-anterior, antero-posterior, lateral); other views,
test-split images and studies without a label row are left out and counted. The label policies are
prepare-chexpert's. Rows in error messages are numbered like a spreadsheet (header = row 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add = parser.add_argument
    add("--root", required=True, metavar="DIR", help="MIMIC-CXR-JPG folder holding files/ and the CSVs")
    add("--out", required=True, metavar="JSON", help="datalist JSON to write")
    add("--labeler", choices=tuple(LABEL_CSVS), default="chexpert",
        help="labels to read, from mimic-cxr-2.0.0-<labeler>.csv: chexpert or negbio (default: chexpert)")
    add("--split", choices=SPLIT_METHODS, default="official",
        help="official = the split CSV's train/validate; patient = train + validate split by patient with "
             "--val-fraction and --seed (default: official)")
    add_datalist_arguments(parser)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    val_fraction, seed = patient_split(args, args.split == "patient", "--split official (the default)")
    result = build_mimic_datalist(
        args.root,
        labeler=args.labeler,
        split=args.split,
        views=args.views,
        policy=label_policy(args),
        val_fraction=val_fraction,
        seed=seed,
        check_files=not args.no_check_files,
        allow_missing=args.allow_missing,
    )
    return write_and_report(result, args.out, start)
