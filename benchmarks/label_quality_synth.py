"""Label quality of four labellers on the synthetic phantoms: DoLL ensemble, best single IG, Grad-CAM, Grad-CAM++.

One command runs the chain, reusing finished steps in --work (each stage resumes):
synth -> prepare-chexpert -> sweep-classifiers (cxr_classifier bundle) -> cxr_doll_labeller bundle
(validation images, one run per labeller) -> label-quality. The issue expects the DoLL ensemble
to win on mean IoU.

    python benchmarks/label_quality_synth.py --smoke --work /tmp/lq   # small CPU version
    python benchmarks/label_quality_synth.py --work /data/lq          # GPU size
    python benchmarks/label_quality_synth.py --smoke --work /tmp/lq3 --archs resnet10 resnet18 resnet34

Results: benchmarks/results/label_quality_synth[_cpu_smoke].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import torch  # noqa: E402

from benchmarks.common import device_name  # noqa: E402
from cxrdoll.cli import main as cli  # noqa: E402
from cxrdoll.engines.bundle_run import run_bundle  # noqa: E402
from cxrdoll.io import read_json, without_nan, write_json_atomic, write_text_atomic  # noqa: E402
from cxrdoll.labels.quality import evaluate, markdown_report  # noqa: E402

LABELLER = PROJECT / "bundles" / "cxr_doll_labeller"
LABELLERS = ("doll_ig", "ig", "gradcam", "gradcampp")
SMOKE = {"n": 1500, "size": 128, "archs": ["densenet_tiny", "resnet10"], "image_size": 96,
         "epochs": 6, "batch_size": 32, "ig_steps": 16, "tau": 0.75}
FULL = {"n": 6000, "size": 256, "archs": ["densenet121", "resnet18", "resnet50", "seresnet50", "efficientnet-b0"],
        "image_size": 224, "epochs": 10, "batch_size": 32, "ig_steps": 20, "tau": 0.8}


def _step(name: str, done: bool, action) -> float:
    if done:
        print(f"[{name}] reusing earlier output")
        return 0.0
    start = time.perf_counter()
    code = action()
    if code not in (0, None):
        raise SystemExit(f"[{name}] failed with exit code {code}")
    return round(time.perf_counter() - start, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small CPU version")
    parser.add_argument("--work", required=True, help="working folder (reused between runs)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--archs", nargs="+", default=None,
                        help="classifier zoo instead of the config's (results get the names as a suffix)")
    args = parser.parse_args()
    cfg = SMOKE if args.smoke else FULL
    if args.archs:
        cfg = {**cfg, "archs": args.archs}
    work = Path(args.work).resolve()
    synth, datalist, sweep = work / "synth", work / "datalist.json", work / "sweep"
    timings = {}
    timings["synth"] = _step("synth", (synth / "synth.json").exists(), lambda: cli(
        ["synth", "--out", str(synth), "--n", str(cfg["n"]), "--size", str(cfg["size"]), "--seed", "0",
         "--n-organs", "0", "--n-lesions", "0", "--lateral-frac", "0"]))
    timings["prepare"] = _step("prepare-chexpert", datalist.exists(), lambda: cli(
        ["prepare-chexpert", "--root", str(synth / "CheXpert-v1.0-small"), "--csv", "train.csv",
         "--valid-csv", "valid.csv", "--out", str(datalist)]))
    registry = sweep / "classifiers.json"
    swept = registry.exists() and len(read_json(registry)["classifiers"]) == len(cfg["archs"])
    timings["sweep"] = _step("sweep-classifiers", swept, lambda: cli(
        ["sweep-classifiers", "--datalist", str(datalist), "--out", str(sweep), "--archs", *cfg["archs"],
         "--image-size", str(cfg["image_size"]), "--max-epochs", str(cfg["epochs"]),
         "--batch-size", str(cfg["batch_size"]), "--num-workers", str(args.num_workers)]))
    folders = {}
    for name in LABELLERS:
        out = work / "labels" / name
        folders[name] = out
        timings[f"label_{name}"] = _step(f"label {name}", (out / "manifest.json").exists(), lambda: run_bundle(
            LABELLER, ("inference.json",), classifiers=str(registry), datalist=str(datalist), output_dir=str(out),
            explainer=name, image_size=cfg["image_size"], tau=cfg["tau"], sections=["validation"],
            num_workers=args.num_workers, num_overlays=8, **{"ig_options#steps": cfg["ig_steps"]}) and None)

    result = evaluate({("doll" if k == "doll_ig" else k): v for k, v in folders.items()}, synth / "truth")
    quality = work / "quality"
    write_json_atomic(quality / "label_quality.json", without_nan(result))
    report = markdown_report(result)
    write_text_atomic(quality / "label_quality.md", report)

    means = {name: entry["iou"]["mean"] for name, entry in result["labellings"].items()}
    classifiers = read_json(registry)["classifiers"]
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    summary = {
        "device": device,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg,
        "classifiers": {c["name"]: round(c["mean_auroc"], 4) for c in classifiers},
        "images": result["images"],
        "mean_iou": means,
        "doll_wins_mean_iou": max(means, key=lambda k: means[k]) == "doll",
        "seconds": timings,
        "label_quality": result,
    }
    name = "label_quality_synth" + ("_cpu_smoke" if args.smoke else "") + ("_" + "_".join(args.archs) if args.archs else "")
    results = PROJECT / "benchmarks" / "results"
    write_json_atomic(results / f"{name}.json", without_nan(summary))
    header = [
        f"# Label quality on synthetic phantoms ({'CPU smoke' if args.smoke else 'full'})", "",
        f"Device: {device}; torch {torch.__version__}; {summary['date']}.",
        f"Classifiers (validation mean AUROC): {summary['classifiers']}.",
        f"Config: {cfg}. Step seconds (0 = reused): {timings}.", "",
        f"DoLL ensemble best on mean IoU: **{summary['doll_wins_mean_iou']}**.", "",
    ]
    write_text_atomic(results / f"{name}.md", "\n".join(header) + report.split("\n", 2)[2])
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
