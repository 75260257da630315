"""Sample efficiency: downstream Dice against the number of labelled images, per starting point.

Every run is one ``cxr_seg_adapter`` training (the bundle's ``train.json``, in-process), so the
experiment measures exactly what users run. Starting points:

- ``scratch``: random weights, everything trains;
- ``backbone``: the classifier's encoder only (``init_ckpt``), everything trains;
- ``doll_adapters``: the DoLL pre-trained segmenter with its encoder frozen, adapters and a new head
  (the decoder trains too unless ``--freeze-decoder``);
- ``doll_full``: the DoLL pre-trained segmenter, everything fine-tuned.

For each seed the training list is shuffled with that seed, and "N labelled" takes its first N
images, so seeds differ in the images they see as well as in initialisation. The headline number
is the validation Dice after the last epoch (no model selection on the validation split); the
best epoch is reported beside it. Per-epoch validation Dice and the trainable-parameter count of
each starting point record convergence speed and cost.

A re-run reuses finished runs and restarts unfinished ones: each run folder keeps
``run_settings.json`` (the options that decide the run, and the sha256 of its datalist, checkpoint
and bundle config), and a finished run is reused only when that matches the call's (else retrained),
so ``results.json`` never reports a run trained under settings other than the ones it states. Images
and masks rewritten in place under the same datalist count as a change too (their sizes and
modification times are fingerprinted).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrdoll.argtypes import comma_list, non_negative_int, positive_float, positive_int, positive_int_list
from cxrdoll.argtypes import segmenter_image_size as image_size
from cxrdoll.data.datalist import write_datalist
from cxrdoll.io import atomic_path, file_sha256, files_fingerprint, read_json, write_json_atomic, write_text_atomic

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_seg_adapter"
STARTS: dict[str, dict[str, str | None]] = {
    "scratch": {"mode": "scratch", "checkpoint": None},
    "backbone": {"mode": "full", "checkpoint": "classifier"},
    "doll_adapters": {"mode": "adapters", "checkpoint": "pretrained"},
    "doll_full": {"mode": "full", "checkpoint": "pretrained"},
}
LABELS = {
    "scratch": "from scratch",
    "backbone": "classifier backbone only",
    "doll_adapters": "DoLL + adapters",
    "doll_full": "DoLL + full fine-tune",
}
# demo: a few minutes on 2 CPU cores; full: the GPU-sized experiment.
PROFILES: dict[str, dict[str, Any]] = {
    "demo": {"image_size": 64, "sizes": [4, 8, 16], "seeds": [0, 1, 2], "max_epochs": 6, "samples_per_epoch": 16,
             "batch_size": 4, "learning_rate": 0.003, "freeze_decoder": False},
    "full": {"image_size": 320, "sizes": [4, 8, 16, 32, None], "seeds": [0, 1, 2], "max_epochs": 40,
             "samples_per_epoch": 64, "batch_size": 8, "learning_rate": 0.001, "freeze_decoder": False},
}
KEY = "val_mean_dice"
# settings passed to every run's training that decide its result (device: the report states it)
RUN_KEYS = ("encoder_name", "decoder", "decoder_channels", "image_size", "batch_size", "max_epochs",
            "samples_per_epoch", "learning_rate", "device")
RUN_SETTINGS = "run_settings.json"
# recorded for the report; their files' sha256 (also recorded) are what decide a run
PATH_KEYS = ("datalist", "checkpoint")


@dataclass(frozen=True)
class Run:
    start: str
    n: int | None  # None = all training images
    seed: int

    @property
    def name(self) -> str:
        return f"{self.start}/n{'all' if self.n is None else self.n}/seed{self.seed}"


def _size(part: str) -> int | None:
    value = None if part == "all" else int(part)
    if value is not None and value <= 0:
        raise ValueError(part)
    return value


def _seed(part: str) -> int:
    value = int(part)
    if not 0 <= value < 2**32:  # numpy's seed range; MONAI's set_determinism passes it on
        raise ValueError(part)
    return value


def _start(part: str) -> str:
    if part not in STARTS:
        raise ValueError(part)
    return part


def parse_sizes(text: str) -> list[int | None]:
    """``"4,8,all"`` -> ``[4, 8, None]``; sizes must be positive and distinct."""
    return comma_list(text, _size, "a positive number of images or 'all'")


def parse_seeds(text: str) -> list[int]:
    return comma_list(text, _seed, f"a seed (a whole number from 0 to {2**32 - 1})")


def parse_starts(text: str) -> list[str]:
    return comma_list(text, _start, f"a starting point ({', '.join(STARTS)})")


def device_option(text: str) -> str:
    """argparse type: a device this machine has (torch would fail deep in the first run's config)."""
    from cxrdoll.deploy.settings import parse_device

    try:
        return parse_device(text, "--device")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def shuffled_datalists(datalist: Path, seeds: Sequence[int], out_dir: Path) -> dict[int, Path]:
    """One copy of ``datalist`` per seed with its training list shuffled by that seed (paths made absolute)."""
    from cxrdoll.data.segmentation import datalist_classes, load_segmentation_datalist

    classes = datalist_classes(datalist)
    training = load_segmentation_datalist(datalist, "training")
    validation = load_segmentation_datalist(datalist, "validation")
    paths = {}
    for seed in seeds:
        order = list(training)
        random.Random(seed).shuffle(order)
        paths[seed] = out_dir / f"datalist_seed{seed}.json"
        write_datalist(paths[seed], {"classes": classes, "training": order, "validation": validation})
    return paths


def check_checkpoints(starts: Sequence[str], settings: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Path and sha256 of each checkpoint the chosen starts load, ``{"pretrained"|"classifier": ...}``:
    a run is reused only on the same weights, also when a file is overwritten in place."""
    identities: dict[str, dict[str, str]] = {}
    for start in starts:
        need = STARTS[start]["checkpoint"]
        if need is None or need in identities:
            continue
        given = settings.get(f"{need}_ckpt")
        if not given:
            raise ValueError(f"starting point {start!r} needs --{need}-ckpt")
        path = Path(given).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"--{need}-ckpt: {given}: file not found")
        identities[need] = {"checkpoint": str(path), "checkpoint_sha256": file_sha256(path)}
    return identities


def check_sizes(datalist: Path, sizes: Sequence[int | None]) -> None:
    from cxrdoll.data.segmentation import load_segmentation_datalist

    available = len(load_segmentation_datalist(datalist, "training"))
    too_many = [n for n in sizes if n is not None and n > available]
    if too_many:
        raise ValueError(f"--sizes {too_many}: the training split of {datalist} has {available} images")


def data_fingerprint(datalist: Path) -> str:
    """``files_fingerprint`` of every image and mask the datalist names (both splits): a file
    rewritten in place under an unchanged datalist changes it."""
    from cxrdoll.data.segmentation import item_files, load_segmentation_datalist

    items = [item for split in ("training", "validation") for item in load_segmentation_datalist(datalist, split)]
    return files_fingerprint((f for item in items for f in item_files(item)), what=f"file listed in {datalist}")


def run_settings(run: Run, datalist_sha256: str, files: str, settings: dict[str, Any],
                 checkpoints: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Everything that decides one run's result, as JSON values (compared with the stored copy as is).

    ``datalist_sha256`` is that of the seed's shuffled copy: training order and absolute image paths;
    ``files`` the ``data_fingerprint`` of the images and masks it names.
    """
    start = STARTS[run.start]
    wanted: dict[str, Any] = {
        "start": run.start, "mode": start["mode"], "num_train": run.n, "seed": run.seed,
        "datalist": str(Path(settings["datalist"]).resolve()), "datalist_sha256": datalist_sha256,
        "data_fingerprint": files,
        # the bundle's own defaults (weight decay, loss weights, ...) decide a run as much as the options
        "bundle_config_sha256": file_sha256(BUNDLE / "configs" / "train.json"),
        **{k: settings[k] for k in RUN_KEYS},
        **(checkpoints[start["checkpoint"]] if start["checkpoint"] else {}),
    }
    if start["mode"] == "adapters":  # the only mode it changes
        wanted["freeze_decoder"] = bool(settings["freeze_decoder"])
    return json.loads(json.dumps(wanted))


def retrain_reason(out_dir: Path, wanted: dict[str, Any]) -> str | None:
    """Why the run in ``out_dir`` must be (re)trained, "" for a fresh folder; None: finished under ``wanted``."""
    stored, history = out_dir / RUN_SETTINGS, out_dir / "validation_history.json"
    if not history.is_file():
        return ""
    if not stored.is_file():  # written after the last epoch only
        return f"no {RUN_SETTINGS} (unfinished, or trained before runs recorded their settings)"
    old = read_json(stored)
    changed = [f"{k} {old.get(k)!r} -> {wanted.get(k)!r}" for k in {**old, **wanted}
               if k not in PATH_KEYS and old.get(k) != wanted.get(k)]
    return "settings changed: " + ", ".join(changed) if changed else None


def train_run(run: Run, datalist: Path, out_dir: Path, wanted: dict[str, Any], settings: dict[str, Any]) -> dict:
    """One adapter-bundle training under ``wanted`` (``run_settings``); a run finished under the same
    settings is reused, any other content of ``out_dir`` is cleared first so no stale file survives."""
    from monai.bundle import ConfigWorkflow

    history_file = out_dir / "validation_history.json"
    reason = retrain_reason(out_dir, wanted)
    if reason is None:
        return read_json(history_file)
    if reason:
        print(f"{run.name}: retraining, {reason}", flush=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    checkpoint = wanted.get("checkpoint")
    overrides = {
        "bundle_root": str(BUNDLE),
        "datalist": str(datalist),
        "output_dir": str(out_dir),
        "mode": wanted["mode"],
        "pretrained_ckpt": checkpoint if STARTS[run.start]["checkpoint"] == "pretrained" else None,
        "init_ckpt": checkpoint if STARTS[run.start]["checkpoint"] == "classifier" else None,
        "num_train": run.n,
        "seed": run.seed,
        "hd95": False,  # HD95 per epoch costs more than the training on CPU; Dice is the curve we need
        "num_workers": settings["num_workers"],
        "freeze_decoder": settings["freeze_decoder"],
        **{k: settings[k] for k in RUN_KEYS},
        # an unfinished run is retrained, never resumed: no resume state each epoch (its save would
        # count in elapsed_s, more for the starts with more to train), and none kept (below)
        "train#checkpoint#interval": settings["max_epochs"],
    }
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    write_json_atomic(out_dir / RUN_SETTINGS, wanted)
    return read_json(history_file)


def summarise(results: list[tuple[Run, dict]], sizes: Sequence[int | None]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of last-epoch and best Dice, and the mean Dice curve."""
    summary: dict[str, Any] = {}
    for start in STARTS:
        per_size = {}
        for n in sizes:
            runs = [h for r, h in results if r.start == start and r.n == n]
            if not runs:
                continue
            final = [_dice(h["history"][-1]) for h in runs]
            best = [max(_dice(e) for e in h["history"]) for h in runs]
            curves = np.array([[_dice(e) for e in h["history"]] for h in runs])
            per_size[_size_key(n)] = {
                "n_images": runs[0]["num_train"],
                "seeds": len(runs),
                "final_mean": float(np.mean(final)),
                "final_std": _sd(final),
                "best_mean": float(np.mean(best)),
                "best_std": _sd(best),
                "dice_per_epoch": curves.mean(axis=0).tolist(),
            }
        first = next((h for r, h in results if r.start == start), None)
        summary[start] = {
            "label": LABELS[start],
            "mode": STARTS[start]["mode"],
            "trainable_parameters": None if first is None else first["trainable_parameters"],
            "total_parameters": None if first is None else first["total_parameters"],
            "sizes": per_size,
        }
    return summary


def paired_comparison(
    results: list[tuple[Run, dict]], reference: str = "doll_adapters"
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """``reference`` against every other start, per size, paired by seed.

    A seed trains every start on the same labelled images, so the per-seed difference in
    last-epoch Dice removes the luck of the draw that inflates the unpaired sd.
    ``{size: {other: {mean_diff, std_diff, wins, seeds}}}``; ``wins`` counts seeds where
    ``reference`` is strictly ahead.
    """
    final = {(r.start, r.n, r.seed): _dice(h["history"][-1]) for r, h in results}
    diffs: dict[tuple[str, str], list[float]] = {}
    for (start, n, seed), dice in final.items():
        if start != reference:
            continue
        for other in STARTS:
            if other != reference and (other, n, seed) in final:
                diffs.setdefault((_size_key(n), other), []).append(dice - final[(other, n, seed)])
    paired: dict[str, dict[str, dict[str, float | int]]] = {}
    for (size, other), values in diffs.items():
        d = np.array(values)
        paired.setdefault(size, {})[other] = {
            "mean_diff": float(d.mean()),
            "std_diff": _sd(d),
            "wins": int((d > 0).sum()),
            "seeds": int(len(d)),
        }
    return paired


def _sd(values: Sequence[float]) -> float | None:
    """Sample standard deviation over seeds; None for one seed (undefined, not zero spread)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _pm(sd: float | None) -> str:
    return "" if sd is None else f" ± {sd:.3f}"


def _size_key(n: int | None) -> str:
    """How a number of labelled images is keyed in the results: "8", or "all" for every image."""
    return "all" if n is None else str(n)


def _dice(record: dict) -> float:
    value = record.get(KEY)
    return 0.0 if value is None else float(value)  # undefined Dice (nothing predicted or present) scores 0


def markdown(summary: dict[str, Any], settings: dict[str, Any], curve_size: str | None,
             paired: dict[str, dict[str, dict[str, float | int | None]]] | None = None) -> str:
    starts = [s for s in STARTS if summary[s]["sizes"]]
    sizes = list(dict.fromkeys(k for s in starts for k in summary[s]["sizes"]))
    lines = [
        "# Sample efficiency",
        "",
        f"Datalist `{settings['datalist']}`; encoder `{settings['encoder_name']}`, decoder `{settings['decoder']}`, "
        f"{settings['image_size']} px, {settings['max_epochs']} epochs of {settings['samples_per_epoch']} samples, "
        f"seeds {','.join(map(str, settings['seeds']))}, device `{settings['device']}`; DoLL + adapters trains adapters, head and "
        f"{'nothing else (decoder frozen)' if settings.get('freeze_decoder') else 'the decoder (encoder frozen)'}.",
        "",
        "Validation mean Dice after the last epoch, mean ± sd over seeds (best epoch in brackets).",
        "",
        "| labelled images | " + " | ".join(LABELS[s] for s in starts) + " |",
        "|---|" + "---|" * len(starts),
    ]
    for size in sizes:
        cells = []
        for s in starts:
            r = summary[s]["sizes"].get(size)
            cells.append("" if r is None else f"{r['final_mean']:.3f}{_pm(r['final_std'])} ({r['best_mean']:.3f})")
        n_images = next(summary[s]["sizes"][size]["n_images"] for s in starts if size in summary[s]["sizes"])
        lines.append(f"| {size if size != 'all' else f'all ({n_images})'} | " + " | ".join(cells) + " |")
    lines.append("| trainable parameters | " + " | ".join(f"{summary[s]['trainable_parameters']:,}" for s in starts) + " |")
    others = [s for s in starts if s != "doll_adapters"]
    if paired and others:
        lines += ["", "DoLL + adapters against each other start, paired by seed (a seed trains every start on the same "
                  "labelled images): mean ± sd of the per-seed difference in last-epoch Dice, and the seeds where "
                  "DoLL + adapters is ahead.", "",
                  "| labelled images | " + " | ".join(f"vs {LABELS[s]}" for s in others) + " |",
                  "|---|" + "---|" * len(others)]
        for size, by_other in paired.items():
            cells = [f"{c['mean_diff']:+.3f}{_pm(c['std_diff'])} ({c['wins']}/{c['seeds']})"
                     if (c := by_other.get(s)) else "" for s in others]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
    if curve_size is not None:
        lines += ["", f"Validation mean Dice per epoch with {curve_size} labelled images (mean over seeds):", ""]
        epochs = len(summary[starts[0]]["sizes"][curve_size]["dice_per_epoch"])
        lines.append("| epoch | " + " | ".join(LABELS[s] for s in starts) + " |")
        lines.append("|---|" + "---|" * len(starts))
        for e in range(epochs):
            lines.append(
                f"| {e + 1} | " + " | ".join(f"{summary[s]['sizes'][curve_size]['dice_per_epoch'][e]:.3f}" for s in starts) + " |"
            )
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path, curve_size: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for start, s in summary.items():
        if not s["sizes"]:
            continue
        keys = list(s["sizes"])
        x = [s["sizes"][k]["n_images"] for k in keys]
        axes[0].errorbar(x, [s["sizes"][k]["final_mean"] for k in keys], yerr=[s["sizes"][k]["final_std"] or 0.0 for k in keys],
                         marker="o", capsize=3, label=s["label"])
        if curve_size in s["sizes"]:
            curve = s["sizes"][curve_size]["dice_per_epoch"]
            axes[1].plot(range(1, len(curve) + 1), curve, marker=".", label=s["label"])
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("labelled training images")
    axes[0].set_ylabel("validation mean Dice (last epoch)")
    axes[0].set_title("Dice against labelled images (mean ± sd over seeds)")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation mean Dice")
    axes[1].set_title(f"convergence with {curve_size} labelled images")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run_experiment(args: argparse.Namespace) -> dict[str, Any]:
    """Train every (start, N, seed) and write ``results.json``, ``results.md`` and ``results.png`` to ``--out``."""
    settings = {**PROFILES[args.profile], **{k: v for k, v in vars(args).items() if v is not None and not k.startswith("_")}}
    sizes, seeds, starts = settings["sizes"], settings["seeds"], settings["starts"]
    checkpoints = check_checkpoints(starts, settings)
    check_sizes(Path(settings["datalist"]), sizes)
    out = Path(settings["out"])
    datalists = shuffled_datalists(Path(settings["datalist"]), seeds, out / "datalists")
    datalist_sha256 = {seed: file_sha256(path) for seed, path in datalists.items()}
    files = data_fingerprint(Path(settings["datalist"]))
    results: list[tuple[Run, dict]] = []
    used: list[dict[str, Any]] = []
    runs = [Run(start, n, seed) for start in starts for n in sizes for seed in seeds]
    began = time.monotonic()
    for i, run in enumerate(runs, 1):
        used.append(run_settings(run, datalist_sha256[run.seed], files, settings, checkpoints))
        history = train_run(run, datalists[run.seed], out / "runs" / run.name, used[-1], settings)
        results.append((run, history))
        last = history["history"][-1].get(KEY)
        print(f"[{i}/{len(runs)}] {run.name}: val Dice {last if last is None else round(last, 3)} "
              f"({time.monotonic() - began:.0f} s)", flush=True)
    summary = summarise(results, sizes)
    paired = paired_comparison(results)
    curve_size = "8" if 8 in sizes else ("all" if sizes[0] is None else str(sizes[0]))
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()},
        "summary": summary,
        "paired_vs_doll_adapters": paired,
        "runs": [{"start": r.start, "n": r.n, "seed": r.seed, **h, "run_settings": u} for (r, h), u in zip(results, used)],
        # finished runs are reused on a re-run, so the call's wall time alone can read 0 s
        "seconds_this_call": time.monotonic() - began,
        "seconds_in_runs": sum(h["history"][-1].get("elapsed_s", 0.0) for _, h in results),
    }
    write_json_atomic(out / "results.json", report)
    write_text_atomic(out / "results.md", markdown(summary, settings, curve_size, paired))
    plot(summary, out / "results.png", curve_size)
    return report


HELP = "downstream Dice against labelled images for four starting points (runs the cxr_seg_adapter bundle)"


def _by_profile(key: str) -> str:
    """``(default: demo 4, full 8)``: a --profile-dependent default, for the help text."""
    def text(value: Any) -> str:
        if isinstance(value, list):
            return ",".join("all" if v is None else str(v) for v in value)
        return str(value)

    return "(default: " + ", ".join(f"{name} {text(p[key])}" for name, p in sorted(PROFILES.items())) + ")"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datalist", required=True, help="downstream datalist (see `python -m cxrdoll seg-datalist`)")
    parser.add_argument("--out", required=True, help="output folder: results.{json,md,png} and one folder per run")
    parser.add_argument("--pretrained-ckpt", help="DoLL pre-trained segmenter (cxr_seg_pretrain models/model.pt); needed by doll_adapters and doll_full")
    parser.add_argument("--classifier-ckpt", help="classifier checkpoint of the same encoder (cxr_classifier); needed by backbone")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="demo", help="defaults for the options marked 'demo ..., full ...' below: demo runs in minutes on a few CPU "
                             "cores, full is GPU-sized (default: %(default)s)")
    parser.add_argument("--starts", type=parse_starts, default=",".join(STARTS), help=f"comma list of starting points: {', '.join(STARTS)} (default: all four)")
    parser.add_argument("--sizes", type=parse_sizes, help="comma list of labelled-image counts, 'all' for the whole split " + _by_profile("sizes"))
    parser.add_argument("--seeds", type=parse_seeds, help="comma list of seeds (at least 3 for the report) " + _by_profile("seeds"))
    parser.add_argument("--encoder-name", default="densenet_tiny", help="segmentation encoder; must match the checkpoints (default: %(default)s)")
    parser.add_argument("--decoder", default="unet", choices=["unet", "psp"], help="decoder type (default: %(default)s)")
    parser.add_argument("--decoder-channels", type=positive_int_list, default=[256, 128, 64, 32, 16],
                        help="comma list of decoder channels, one per encoder stage (default: 256,128,64,32,16)")
    parser.add_argument("--image-size", type=image_size, help="training side in pixels, a multiple of 32 " + _by_profile("image_size"))
    parser.add_argument("--batch-size", type=positive_int, help="images per training step " + _by_profile("batch_size"))
    parser.add_argument("--max-epochs", type=positive_int, help="epochs per run " + _by_profile("max_epochs"))
    parser.add_argument("--samples-per-epoch", type=positive_int,
                        help="training samples drawn per epoch " + _by_profile("samples_per_epoch"))
    parser.add_argument("--learning-rate", type=positive_float, help="learning rate " + _by_profile("learning_rate"))
    parser.add_argument("--freeze-decoder", action="store_true", default=None,
                        help="DoLL + adapters: freeze the pre-trained decoder too (default: only the encoder)")
    parser.add_argument("--num-workers", type=non_negative_int, default=0,
                        help="data loader processes; 0 loads in the main process (default: 0)")
    parser.add_argument("--device", type=device_option, default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--num-threads", type=positive_int, help="torch CPU threads; 1 is fastest for small models on a busy machine (default: torch's)")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    report = run_experiment(args)
    out = Path(args.out)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'} in {report['seconds_this_call']:.0f} s ({report['seconds_in_runs']:.0f} s of training runs)")
    return 0
