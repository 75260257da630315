"""``python -m cxrdoll synth``: synthetic CXR phantoms with true masks (CheXpert, organ and lesion sets)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cxrdoll.argtypes import non_negative_int

from .writer import SynthConfig, write_synthetic

HELP = "Generate synthetic chest X-ray phantoms with true finding masks, organ masks and lesion masks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder: CheXpert-v1.0-small/ (images and CSVs), truth/ (true masks), organs/ and lesions/ "
                        "(each with its datalist.json), synth.json; layout in docs/FORMATS.md")
    parser.add_argument("--n", type=int, default=2000, help="number of studies (frontal images) in the CheXpert-layout set (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels, 32 to 4096 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default: %(default)s)")
    parser.add_argument("--uncertain-frac", type=float, default=0.05, help="fraction of training label cells reported uncertain (-1) (default: %(default)s)")
    parser.add_argument("--blank-frac", type=float, default=0.05, help="fraction of training label cells left blank (default: %(default)s)")
    parser.add_argument("--lateral-frac", type=float, default=0.1, help="fraction of studies that also get a lateral view (default: %(default)s)")
    parser.add_argument("--valid-frac", type=float, default=0.1, help="fraction of patients (and organ/lesion images) in validation (default: %(default)s)")
    parser.add_argument("--n-organs", type=int, default=200, help="images in the SCR-style organ set, 0 for none (default: %(default)s)")
    parser.add_argument("--n-lesions", type=int, default=200, help="images in the infection-mask set, 0 for none (default: %(default)s)")
    parser.add_argument("--normal-frac", type=float, default=0.25, help="fraction of images drawn without findings (default: %(default)s)")
    parser.add_argument("--prevalence", type=float, default=0.22, help="chance of each finding in an abnormal image (default: %(default)s)")
    parser.add_argument("--workers", type=non_negative_int, default=1,
                        help="worker processes, 0 or 1 for none; the output does not depend on it "
                             "(default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier synthetic output in --out")
    parser.add_argument("--preview", action="store_true", help="also write OUT/preview.png, a contact sheet with mask outlines")


def run(args: argparse.Namespace) -> int:
    cfg = SynthConfig(
        n=args.n, size=args.size, seed=args.seed, uncertain_frac=args.uncertain_frac, blank_frac=args.blank_frac,
        lateral_frac=args.lateral_frac, valid_frac=args.valid_frac, n_organs=args.n_organs, n_lesions=args.n_lesions,
        normal_frac=args.normal_frac, prevalence=args.prevalence,
    )
    start = time.perf_counter()
    summary = write_synthetic(cfg, args.out, workers=args.workers, overwrite=args.overwrite, progress=print)
    images = summary["rows"]["train"] + summary["rows"]["valid"] + cfg.n_organs + cfg.n_lesions
    elapsed = time.perf_counter() - start
    print(f"{images} images in {elapsed:.1f} s ({images / elapsed:.1f} images/s)")
    for obs, count in summary["true_positives"].items():
        print(f"  {obs:<28} {count:>6} / {summary['studies']}")
    if args.preview:
        from .preview import write_preview

        print(f"preview: {write_preview(args.out)}")
    return 0
