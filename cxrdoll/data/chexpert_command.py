"""``python -m cxrdoll prepare-chexpert``: CheXpert CSV(s) -> classification datalist JSON."""

from __future__ import annotations

import argparse
import time

from cxrdoll.argtypes import fraction, non_negative_int
from cxrdoll.data.chexpert import (
    BLANK_POLICIES,
    NO_FINDING_RULES,
    UNCERTAIN_POLICIES,
    ChexpertDatalist,
    LabelPolicy,
    build_datalist,
)

VAL_FRACTION, SPLIT_SEED = 0.1, 0  # a patient split's defaults

HELP = "Turn CheXpert train.csv (and valid.csv) into a classification datalist with label policies and a patient split."

EPILOG = """\
examples:
  python -m cxrdoll prepare-chexpert --root /data/CheXpert-v1.0-small --csv train.csv --out datalist.json
  python -m cxrdoll prepare-chexpert --root /data --csv CheXpert-v1.0-small/train.csv \\
      --valid-csv CheXpert-v1.0-small/valid.csv --uncertain zeros \\
      --uncertain-per "Atelectasis=ones,Edema=ones" --out datalist.json

CSV paths (CheXpert-v1.0-small/train/...) resolve against --root whether it is the dataset folder
or its parent; absolute paths and '..' are rejected. A CSV needs Path and the 14 observations; without
a Frontal/Lateral column the view is read from the file name (view1_frontal.jpg). A blank "No Finding" is derived from the
pathologies (0 if any is positive, uncertain if any is only uncertain); --no-finding raw turns
that off. Rows in error messages are numbered like a spreadsheet (header = row 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add = parser.add_argument
    add("--root", required=True, metavar="DIR", help="dataset folder (holding train/), or its parent")
    add("--csv", required=True, metavar="CSV", help="CheXpert CSV, as given or relative to --root")
    add("--out", required=True, metavar="JSON", help="datalist JSON to write")
    add("--valid-csv", metavar="CSV", help="use this CSV (e.g. CheXpert's valid.csv) as the validation list instead of a split")
    add_datalist_arguments(parser)


def add_datalist_arguments(parser: argparse.ArgumentParser, blank: str = "zeros", blank_meaning: str = "not mentioned") -> None:
    """Options every classification datalist command takes (prepare-chexpert, prepare-mimic, prepare-nih): patient
    split, views, label policies, file checks; one definition, so their names, defaults and help stay alike.
    ``blank`` and ``blank_meaning``: --blank's default and what a blank is in the dataset's labels."""
    add = parser.add_argument
    # None when not given, so that a command whose split is not by patient can refuse them (patient_split)
    add("--val-fraction", type=fraction, metavar="F",
        help=f"fraction of patients for validation when splitting by patient (default: {VAL_FRACTION})")
    add("--seed", type=non_negative_int, metavar="N", help=f"seed of the patient split (default: {SPLIT_SEED})")
    add("--views", default="frontal", metavar="LIST", help="comma list of frontal, lateral, or 'all' (default: frontal)")
    add("--uncertain", choices=UNCERTAIN_POLICIES, default="ignore",
        help="uncertain (-1) labels: ignore = masked (U-Ignore), ones (U-Ones), zeros (U-Zeros) (default: ignore)")
    add("--uncertain-per", metavar="OBS=POLICY,...",
        help="per-observation overrides, e.g. 'Atelectasis=ones,Cardiomegaly=zeros' (names ignore case; _ may stand for a space)")
    add("--blank", choices=BLANK_POLICIES, default=blank,
        help=f"blank labels ({blank_meaning}): zeros = negative, ignore = masked (default: {blank})")
    add("--blank-per", metavar="OBS=POLICY,...", help="per-observation blank overrides, e.g. 'Fracture=ignore'")
    add("--no-finding", choices=NO_FINDING_RULES, default="derive",
        help="derive a blank 'No Finding' from the pathologies, or keep it raw (default: derive)")
    add("--allow-missing", action="store_true", help="skip images missing under --root instead of failing")
    add("--no-check-files", action="store_true", help="do not look for the images; build from the CSVs alone")


def patient_split(args: argparse.Namespace, used: bool, instead: str) -> tuple[float, int]:
    """(val_fraction, seed) of a patient split. Given to a run whose validation list comes from elsewhere
    (``instead`` names the option that chose that), they would be silently ignored: a usage error."""
    given = [name for name, value in (("--val-fraction", args.val_fraction), ("--seed", args.seed)) if value is not None]
    if given and not used:
        raise ValueError(f"{' and '.join(given)} only shape a patient split, and {instead} gives the validation list here")
    return (VAL_FRACTION if args.val_fraction is None else args.val_fraction,
            SPLIT_SEED if args.seed is None else args.seed)


def label_policy(args: argparse.Namespace) -> LabelPolicy:
    """The policy that :func:`add_datalist_arguments`' options ask for."""
    return LabelPolicy.build(args.uncertain, args.blank, args.uncertain_per, args.blank_per, args.no_finding)


def write_and_report(result: ChexpertDatalist, out: str, start: float) -> int:
    """Write the datalist, print its summary and the time since ``start`` (``time.perf_counter``)."""
    result.write(out)
    print(result.summary())
    if result.missing:
        print(f"warning: skipped {len(result.missing)} missing images (first: {result.missing[0]})")
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    policy = label_policy(args)
    val_fraction, seed = patient_split(args, args.valid_csv is None, "--valid-csv")
    result = build_datalist(
        args.root,
        args.csv,
        valid_csv=args.valid_csv,
        views=args.views,
        policy=policy,
        val_fraction=val_fraction,
        seed=seed,
        check_files=not args.no_check_files,
        allow_missing=args.allow_missing,
    )
    return write_and_report(result, args.out, start)
