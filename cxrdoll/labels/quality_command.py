"""``python -m cxrdoll label-quality``: score one or several label folders against true masks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cxrdoll.argtypes import non_negative_int, positive_int
from cxrdoll.io import without_nan, write_json_atomic, write_text_atomic

HELP = "Score DoLL/baseline labels against true masks (IoU, pointing game, soft-map AUROC, bootstrap CIs)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", nargs="+", action="extend", required=True, metavar="[NAME=]DIR",
                        help="label folder(s); NAME=DIR names a column, else the folder's name is used")
    parser.add_argument("--truth", required=True, help="folder of true masks (<id>.npz with key 'mask', optional 'annotated'; "
                        "prepare-chexlocalize and prepare-nih-boxes write real ones)")
    parser.add_argument("--out", required=True, help="folder for label_quality.md and label_quality.json")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples for the 95%% confidence intervals, 0 for none (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap resampling (default: %(default)s)")
    parser.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1),
                        help="threads scoring images at once (default: the CPU count, at most 8); a full-resolution "
                             "image takes seconds")


def parse_labellings(specs: list[str]) -> dict[str, str]:
    """``["doll=/a", "/b/gradcam"]`` -> ``{"doll": "/a", "gradcam": "/b/gradcam"}``; names must be unique."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep:
            name, folder = Path(spec).name, spec
        if not name or not folder:
            raise ValueError(f"--labels {spec!r}: expected NAME=DIR or DIR")
        if name in out:
            raise ValueError(f"--labels: the name {name!r} is used twice")
        out[name] = folder
    return out


def run(args: argparse.Namespace) -> int:
    from cxrdoll.labels.quality import evaluate, markdown_report  # torch: not for --help

    result = evaluate(parse_labellings(args.labels), args.truth, n_boot=args.bootstrap, seed=args.seed, progress=None,
                      workers=args.workers)
    out = Path(args.out)
    write_json_atomic(out / "label_quality.json", without_nan(result))  # null where undefined (no true positives)
    report = markdown_report(result)
    write_text_atomic(out / "label_quality.md", report)
    print(report)
    return 0
