"""``python -m cxrdoll prepare-chexlocalize``: CheXlocalize's segmentations -> truth files for label-quality."""

from __future__ import annotations

import argparse
import time

HELP = "Turn CheXlocalize's radiologist segmentations (gt_segmentations_*.json) into label-quality truth files."

EPILOG = """\
examples:
  python -m cxrdoll prepare-chexlocalize --gt gt_segmentations_val.json --out /data/chexlocalize_truth
  python -m cxrdoll prepare-chexlocalize --gt gt_segmentations_val.json --prefix CheXpert-v1.0/valid \\
      --out /data/chexlocalize_truth

Each image becomes OUT/<prefix>/<patient>/<study>/<view>.npz, where the labeller writes the label of the
datalist id <prefix>/<patient>/<study>/<view>.jpg: --prefix is the part of valid.csv's Path column before
/patient..., CheXpert-v1.0-small/valid for the small download, CheXpert-v1.0/valid for the full-size one
(CheXlocalize's own copy); for gt_segmentations_test.json, that of the test CSV given to prepare-chexpert.
The 10 outlined pathologies are the annotated channels; No Finding, Pneumonia, Pleural Other and
Fracture are unknown, never scored. Then: python -m cxrdoll label-quality --labels ... --truth OUT."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cxrdoll.labels.chexlocalize import DEFAULT_PREFIX, VIEWS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add = parser.add_argument
    add("--gt", required=True, metavar="JSON",
        help="CheXlocalize's gt_segmentations_val.json or gt_segmentations_test.json")
    add("--out", required=True, metavar="DIR", help="truth folder (label-quality's --truth); truth files already "
                                                       "under OUT/<prefix> are refused unless --overwrite")
    add("--prefix", default=DEFAULT_PREFIX, metavar="PATH",
        help=f"datalist id before /patient<N>/...: the CSV Path's folder (default: {DEFAULT_PREFIX})")
    add("--views", choices=VIEWS, default="frontal",
        help="frontal: frontal views only, the ones a prepare-chexpert datalist holds by default and the "
             "labeller labels; all: laterals too (default: frontal)")
    add("--overwrite", action="store_true", help="remove the truth files already under OUT/<prefix> first")


def run(args: argparse.Namespace) -> int:
    from cxrdoll.labels.chexlocalize import convert  # pycocotools and torch: not for --help
    from cxrdoll.labels.truth_files import summary

    start = time.perf_counter()
    done = convert(args.gt, args.out, prefix=args.prefix, views=args.views, overwrite=args.overwrite, progress=None)
    left_out = f" ({done.other_views} lateral left out)" if done.other_views else ""
    print(summary(done.written, done.folder, left_out, time.perf_counter() - start, "non-empty segmentations",
                  done.non_empty))
    return 0
