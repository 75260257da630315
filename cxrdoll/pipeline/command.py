"""``python -m cxrdoll demo``: the whole pipeline, resumable, ending in ``report.md``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cxrdoll.data.datalist import load_datalist
from cxrdoll.engines.sweep import check_archs
from cxrdoll.pipeline.demo import PROFILES, Inputs, build_stages, profile_with, shared_lungs_datalist
from cxrdoll.pipeline.report import write_report
from cxrdoll.pipeline.stages import Stage, StageFailed, StageRunner

HELP = "run the whole DoLL pipeline (data → classifiers → labels → pre-training → adapters → report)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="work folder: report.md, pipeline.log (every command and its output), timings.json and one "
                             "folder per stage; a re-run there resumes (default: runs/demo)")
    parser.add_argument("--fresh", action="store_true", help="re-run every stage, even finished ones")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="the machine the sizes are for: 'cpu' takes about 6 minutes on a 2-core machine, 'cuda' "
                             "uses full-size settings and needs a visible GPU; either way the stages train on a GPU "
                             "whenever one is visible (default: %(default)s)")
    parser.add_argument("--profile", choices=sorted(PROFILES),
                        help="sizes to use (default: the --device's); 'smoke' checks the wiring in 1-2 minutes")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--chexpert-root", type=Path, help="your CheXpert copy instead of the synthetic phantoms")
    source.add_argument("--shared-data", type=Path,
                        help="the real test data (../shared/data): its classification sets feed DoLL, its lung masks "
                             "are the downstream task")
    parser.add_argument("--chexpert-csv", help="CSV under --chexpert-root (default: train.csv)")
    parser.add_argument("--downstream", type=Path, help="downstream segmentation datalist (python -m cxrdoll seg-datalist), needed with --chexpert-root "
                             "(default: the synthetic organ set, or with --shared-data its lung masks)")
    parser.add_argument("--archs", nargs="+", action="extend", metavar="ARCH", help="classifier architectures, as for sweep-classifiers --archs (default: the profile's)")
    parser.add_argument("--seg-encoder", help="segmentation encoder; must be one of --archs (default: the profile's)")
    parser.add_argument("--until", metavar="STAGE",
                        help="stop after this stage, in order: data, datalist, classifiers, labels, label-quality "
                             "(synthetic data only), pretrain, downstream (--shared-data only), finetune "
                             "(default: run them all)")


def run(args: argparse.Namespace) -> int:
    changes = {k: v for k, v in {"archs": tuple(args.archs) if args.archs else None,
                                 "seg_encoder": args.seg_encoder}.items() if v is not None}
    check_device(args.device, args.profile)
    if args.chexpert_csv is not None and args.chexpert_root is None:
        raise ValueError("--chexpert-csv is read under --chexpert-root: give --chexpert-root too (without it the "
                         "demo runs on the synthetic phantoms or --shared-data, and the CSV would go unused)")
    profile = profile_with(args.profile or args.device, **changes)
    check_archs(profile.archs)
    if profile.seg_encoder not in profile.archs:
        raise ValueError(f"--seg-encoder {profile.seg_encoder!r} must be one of the classifier archs {list(profile.archs)}")
    for name in ("chexpert_root", "downstream", "shared_data"):  # commands run from any folder
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    downstream = args.downstream
    if args.shared_data is not None and downstream is None:
        downstream = shared_lungs_datalist(args.out.resolve())
    inputs = Inputs(chexpert_root=args.chexpert_root, chexpert_csv=args.chexpert_csv or "train.csv", downstream=downstream,
                    shared_data=args.shared_data)
    work = args.out.resolve()
    stages = build_stages(work, profile, inputs)
    check_until(args.until, stages)
    check_inputs(args)
    work.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(work, fresh=args.fresh)
    start = time.perf_counter()
    try:
        for stage in stages:
            runner.run(stage)
            if stage.name == args.until:
                break
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    title = "cxrdoll pipeline report: " + ("shared real data" if args.shared_data else
                                            "your CheXpert data" if args.chexpert_root else "synthetic phantoms")
    names = [stage.name for stage in stages]
    report = write_report(work, title, runner.log_path, names, [s.name for s in stages if runner.is_done(s)])
    print(f"pipeline finished in {time.perf_counter() - start:.0f} s; report: {report}")
    return 0


def check_device(device: str, profile: str | None) -> None:
    """--device cuda on a machine without a GPU would run the full-size settings on the CPU, for hours;
    with --profile given, --device picks nothing and is not checked."""
    import torch

    if device == "cuda" and profile is None and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch; use --device cpu (the default), or "
                         "--profile cuda to run the full-size settings on the CPU anyway")


def check_until(until: str | None, stages: list[Stage]) -> None:
    """An unknown ``--until`` would otherwise run the whole pipeline; this run's stages depend on its inputs."""
    names = [stage.name for stage in stages]
    if until is not None and until not in names:
        raise ValueError(f"--until {until!r}: no such stage in this run; choose from {names}")


def check_inputs(args: argparse.Namespace) -> None:
    """Check the given inputs now, not at the stage that first reads them after minutes of training."""
    for option, folder in (("--chexpert-root", args.chexpert_root), ("--shared-data", args.shared_data)):
        if folder is not None and not folder.is_dir():
            raise FileNotFoundError(f"{folder}: {option} folder not found")
    downstream = args.downstream
    if args.chexpert_root is not None and downstream is None:  # else finetune fails on it after every other stage
        raise ValueError("--chexpert-root needs --downstream, a segmentation datalist to fine-tune on (python -m cxrdoll "
                         "seg-datalist): the synthetic organ set is made only with the phantoms")
    if downstream is None or (args.shared_data is not None and not downstream.exists()):
        return  # none given, or the shared lung masks will be written there
    if not downstream.is_file():
        raise FileNotFoundError(f"{downstream}: --downstream datalist not found")
    load_datalist(downstream, ("training", "validation"))
