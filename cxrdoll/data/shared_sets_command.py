"""``python -m cxrdoll prepare-shared-cls``: the shared real classification sets as a CheXpert-layout dataset."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.shared_sets import LUNG_SET, SOURCES, lung_validation_patients, read_shared_sets, write_chexpert_layout

HELP = ("Map ../shared/data's real classification sets (NIH, ieee8023, Kermany) onto CheXpert's layout and "
        "observations, leaving out the patients of the lung set's validation split")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shared", type=Path, required=True, help="the shared data folder (../shared/data)")
    parser.add_argument("--out", type=Path, required=True, help="output folder; the CSV is OUT/CheXpert-shared/train.csv")
    parser.add_argument("--sources", nargs="+", action="extend", choices=list(SOURCES), help="which sets to include (default: all three)")


def run(args: argparse.Namespace) -> int:
    # not argparse's default, which "extend" would add to; a set named twice is read once
    args.sources = list(dict.fromkeys(args.sources or SOURCES))
    held_out = lung_validation_patients(args.shared)
    every = read_shared_sets(args.shared, args.sources)
    items = [item for item in every if item.patient not in held_out]
    csv_path = write_chexpert_layout(items, args.out)
    positives = Counter(o for item in items for o in OBSERVATIONS if item.labels.get(o) == 1)
    print(f"wrote {len(items)} images from {len(args.sources)} sets to {csv_path}")
    if len(items) < len(every):
        print(f"  left out {len(every) - len(items)} images of patients in {LUNG_SET}'s validation split, "
              "so that pre-training never sees the images the adapters are validated on")
    for obs in OBSERVATIONS:
        known = sum(1 for item in items if item.labels.get(obs) is not None)
        if known:
            print(f"  {obs:<28} positive {positives[obs]:>4} / known {known:>4}")
    print(f"blank cells are unknown, not negative: build the datalist with\n  python -m cxrdoll prepare-chexpert "
          f"--root {args.out} --csv {csv_path.relative_to(args.out).as_posix()} --blank ignore --out DATALIST")
    return 0
