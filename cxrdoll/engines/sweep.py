"""``python -m cxrdoll sweep-classifiers``: train several architectures, then write ``classifiers.json``.

Each architecture trains through the cxr_classifier bundle into ``OUT/<arch>/`` (resumable: a
re-run continues unfinished ones and keeps finished ones). ``classifiers.json`` (docs/FORMATS.md)
is rewritten after every architecture, so the labeller can use whatever has finished; entries
registered by an earlier sweep into OUT, on the same datalist, are kept until replaced.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

from cxrdoll.argtypes import image_size, non_negative_int, positive_int
from cxrdoll.constants import OBSERVATIONS
from cxrdoll.engines.bundle_run import DEFAULT_BUNDLE_ROOT, parse_overrides, train_classifier
from cxrdoll.io import file_sha256, read_json, write_json_atomic

DEFAULT_ARCHS = ("densenet121", "resnet18")
HELP = "train several classifier architectures through the cxr_classifier bundle and write classifiers.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--datalist", help="classification datalist JSON (docs/FORMATS.md)")
    data.add_argument("--dataset-dir", help="folder holding the datalist (datalists/chexpert.json, chexpert.json or datalist.json)")
    parser.add_argument("--out", required=True, help="output folder: one sub-folder per architecture + classifiers.json")
    parser.add_argument("--archs", nargs="+", action="extend", metavar="ARCH",
                        help="architectures, e.g. densenet121 resnet50 efficientnet-b0 densenet_tiny; an unknown name is refused "
                             "with the full list (cxrdoll.networks.CLASSIFIER_NAMES) (default: densenet121 resnet18)")
    parser.add_argument("--image-size", type=image_size, default=320, help="training size in pixels (default: 320)")
    parser.add_argument("--max-epochs", type=positive_int, default=10, help="epochs per architecture (default: 10)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per training step (default: 32)")
    parser.add_argument("--num-workers", type=non_negative_int, default=4,
                        help="data loader processes; 0 loads in the main process (default: 4)")
    parser.add_argument("--bundle-root", default=str(DEFAULT_BUNDLE_ROOT),
                        help="cxr_classifier bundle folder (default: this repository's)")
    parser.add_argument(
        "--register-only", action="store_true",
        help="train nothing: write classifiers.json from runs already in OUT/<arch>/ (e.g. trained by monai.bundle run)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="ID=JSON",
        help="extra bundle override, value parsed as JSON when possible (e.g. --set learning_rate=0.001); "
             "not an id set by the options above",
    )


def run(args: argparse.Namespace) -> int:
    from cxrdoll.data.classification import find_datalist
    from cxrdoll.data.datalist import load_classification_datalist

    args.archs = args.archs or list(DEFAULT_ARCHS)  # not argparse's default: "extend" would add to it
    check_archs(args.archs)
    extra = parse_overrides(args.set)
    check_extra_overrides(extra)
    datalist = Path(args.datalist or find_datalist(args.dataset_dir)).resolve()
    load_classification_datalist(datalist)  # a broken datalist must not be trained on or registered by its hash
    overrides = {
        "datalist": str(datalist),
        "image_size": args.image_size,
        "max_epochs": args.max_epochs,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        **extra,
    }
    out = Path(args.out).resolve()
    sweep(args.archs, datalist, out, args.bundle_root, overrides, train=not args.register_only)
    print(f"wrote {out / 'classifiers.json'}")
    return 0


# Bundle ids (and run_bundle's own arguments) the sweep sets from its options, with those options: the
# registry records the datalist's hash and the run folders, so a --set of one would train on other data
# or elsewhere than it registers (or end in a TypeError).
SET_BY_SWEEP: dict[str, str] = {
    "datalist": "use --datalist", "dataset_dir": "use --dataset-dir", "image_size": "use --image-size",
    "max_epochs": "use --max-epochs", "batch_size": "use --batch-size", "num_workers": "use --num-workers",
    "output_dir": "use --out", "network_name": "use --archs", "bundle_root": "use --bundle-root",
    "configs": "the sweep trains with train.json",
}


def check_extra_overrides(extra: dict[str, Any]) -> None:
    """Refuse a ``--set`` of what the sweep sets itself, naming the option to use instead."""
    taken = [f"{key} ({SET_BY_SWEEP[key]})" for key in extra if key in SET_BY_SWEEP]
    if taken:
        raise ValueError(f"--set: {', '.join(taken)}: the sweep sets these from its own options")


def check_archs(archs: Sequence[str]) -> None:
    """Refuse unknown or repeated architectures before anything trains (each names one run folder
    and one registry entry, and the labeller refuses a registry with repeated names)."""
    from cxrdoll.networks import CLASSIFIER_NAMES

    unknown = [a for a in archs if a not in CLASSIFIER_NAMES]
    if unknown:
        raise ValueError(f"--archs: unknown architecture(s) {unknown}; choose from {list(CLASSIFIER_NAMES)}")
    repeated = sorted({a for a in archs if list(archs).count(a) > 1})
    if repeated:
        raise ValueError(f"--archs: {repeated} listed more than once; each architecture trains one run")


def sweep(
    archs: Sequence[str], datalist: Path, out: Path, bundle_root: str | Path, overrides: dict[str, Any],
    train: bool = True,
) -> dict:
    """Train each of ``archs`` (unless ``train`` is False: register finished runs only) and return the
    registry written to ``out/classifiers.json``.

    The registry already there (same datalist) is the starting point: each architecture's entry is
    replaced once it has finished, so a failed or killed re-run, or a sweep of other architectures,
    leaves the classifiers registered before in place.
    """
    data_hash = file_sha256(datalist)
    entries = _registered(out / "classifiers.json", data_hash)
    for arch in archs:
        start = time.perf_counter()
        checkpoint_before = _checkpoint_stamp(out / arch)  # replaced (atomically) by each epoch trained
        if train:
            metrics = train_classifier(out / arch, bundle_root=bundle_root, network_name=arch, **overrides)
        else:
            metrics = read_json(out / arch / "metrics.json")
        entry = registry_entry(out / arch, arch, int(overrides["image_size"]), metrics, data_hash)
        previous = entries.get(arch, {})
        if previous.get("checkpoint_sha256") == entry["checkpoint_sha256"] and "train_seconds" in previous:
            entry["train_seconds"] = previous["train_seconds"]  # nothing trained now: keep the time it took
        elif train and _checkpoint_stamp(out / arch) != checkpoint_before:
            entry["train_seconds"] = round(time.perf_counter() - start, 1)  # not a resume that had nothing to train
        entries[arch] = entry
        write_json_atomic(out / "classifiers.json", _registry(data_hash, entries))
    return _registry(data_hash, entries)


def _checkpoint_stamp(run_dir: Path) -> tuple[int, int] | None:
    """Inode and modification time of the run's checkpoint: each save renames a new file over it,
    so the stamp changes without reading a file of hundreds of MB."""
    try:
        st = (run_dir / "checkpoint.pt").stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _registry(data_hash: str, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"observations": list(OBSERVATIONS), "data_hash": data_hash, "classifiers": list(entries.values())}


def _registered(path: Path, data_hash: str) -> dict[str, dict[str, Any]]:
    """The entries of an earlier ``classifiers.json`` for the same datalist whose checkpoint is still
    the one registered (same sha256), by name; none for another datalist (its AUROCs do not belong
    beside this hash). A model retrained or removed since is left out: its entry no longer describes
    it, and the labeller would refuse the whole registry."""
    if not path.is_file():
        return {}
    registry = read_json(path)
    if not isinstance(registry, dict) or registry.get("data_hash") != data_hash:
        return {}
    return {e["name"]: e for e in registry.get("classifiers", []) if _still_registered(e)}


def _still_registered(entry: dict[str, Any]) -> bool:
    """The checkpoint is there and, where the entry records its sha256 (a hand-written one may
    not, which the labeller accepts), still has it."""
    checkpoint, digest = Path(entry.get("checkpoint", "")), entry.get("checkpoint_sha256")
    return checkpoint.is_file() and (digest is None or file_sha256(checkpoint) == digest)


def registry_entry(run_dir: Path, arch: str, image_size: int, metrics: dict[str, Any],
                   data_hash: str | None = None) -> dict[str, Any]:
    """One ``classifiers.json`` entry from a finished bundle run's ``metrics.json``.

    The network and image size the run recorded win over ``arch`` and ``image_size`` (the sweep's
    command line): a model registered at another size would be explained on resized images.
    ``image_size`` is used only for runs from before metrics recorded it. A run trained on another
    datalist than ``data_hash`` (sha256) names is refused: its AUROCs would sit beside that hash.
    """
    run = metrics.get("run") or {}
    if run.get("network_name", arch) != arch:
        raise ValueError(f"{run_dir / 'metrics.json'}: trained as {run['network_name']!r}, not {arch!r}")
    if data_hash and run.get("datalist_sha256", data_hash) != data_hash:
        raise ValueError(f"{run_dir / 'metrics.json'}: trained on another datalist (sha256 {run['datalist_sha256'][:12]}..., "
                         f"not {data_hash[:12]}...): train it again on this one, or register it with its own datalist")
    image_size = int(run.get("image_size", image_size))
    best = metrics["best"]
    if best is None or best["mean_auroc"] is None:
        raise ValueError(f"{run_dir / 'metrics.json'}: no validation AUROC was defined for {arch} (none of the "
                         "competition five had both positive and negative validation labels: the validation split needs both)")
    return {
        "name": arch,
        "arch": arch,
        "checkpoint": str(run_dir / "model.pt"),
        "checkpoint_sha256": file_sha256(run_dir / "model.pt"),
        "image_size": image_size,
        "auroc": best["auroc"],
        "mean_auroc": best["mean_auroc"],
        "best_epoch": best["epoch"],
    }
