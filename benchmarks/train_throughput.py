"""Training throughput of the cxr_classifier bundle: end-to-end pipeline vs the bare model step.

    python benchmarks/train_throughput.py                # GPU: DenseNet121, 320 px, batch 64, bf16 + channels_last
    python benchmarks/train_throughput.py --compile      # the same with torch.compile
    python benchmarks/train_throughput.py --smoke        # CPU smoke run: tiny net, 64 px, batch 8
    python benchmarks/train_throughput.py --trace DIR    # also Chrome traces of the profiled iterations

The pipeline rate runs the bundle's own trainer (train.json: uint8 cache -> DataLoader ->
augmentation -> SupervisedTrainer) on random PNGs, timed from the end of the warm-up iterations
to the last iteration; cache building is timed separately. The bare rate repeats the same
optimisation step on tensors already on the device. Both are also looked at outside the timing:
the ATen operators one iteration dispatches (about one kernel launch each on a GPU) and which ones
the pipeline adds to the bare step, and, over a few profiled iterations, how busy the device stayed
(``DeviceTimeline``): a pipeline busy fraction below the bare step's is time the GPU waited for
the host. Results: JSON + a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    DeviceTimeline, OpCounter, cudnn_flags, device_name, loader_rate, run_parallel, time_steps, time_trainer, within_events,
)
from cxrdoll.constants import OBSERVATIONS  # noqa: E402
from cxrdoll.data.datalist import write_datalist  # noqa: E402
from cxrdoll.engines.bundle_run import make_workflow, parse_overrides  # noqa: E402
from cxrdoll.engines.loss import MaskedBCEWithLogitsLoss  # noqa: E402
from cxrdoll.io import save_png_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from cxrdoll.networks import build_classifier  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="small CPU run: densenet_tiny, 64 px, batch 8, 3 timed iterations after 2 warm-up")
    p.add_argument("--arch", default="densenet121")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=60, help="timed iterations")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first (cuDNN autotune, compile)")
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--compile", action="store_true", help="torch.compile the network in both measurements")
    p.add_argument("--profile-iterations", type=int, default=5,
                   help="iterations profiled for the device timeline, after the warm-up and before the timed ones (0: none)")
    p.add_argument("--trace", type=Path, default=None, metavar="DIR",
                   help="write Chrome traces of the profiled iterations here (<out name>_{bare,pipeline}.json.gz)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a bundle config override for the pipeline run, e.g. train#dataloader#pin_memory=false or "
                        "'train#trainer#train_handlers=$@train#handlers[:-3]' (no logging handlers); VALUE is JSON "
                        "where it parses as JSON, else a string; repeatable")
    p.add_argument("--out", type=Path, default=None, help="result stem (default results/train_throughput[_cpu_smoke])")
    args = p.parse_args(argv)
    if args.smoke:
        args.arch, args.image_size, args.batch_size = "densenet_tiny", 64, 8
        args.iterations, args.warmup, args.num_workers, args.profile_iterations = 3, 2, 0, 1
    if args.out is None:
        args.out = RESULTS / ("train_throughput_cpu_smoke" if args.smoke else "train_throughput")
    args.overrides = parse_overrides(args.override)
    return args


def write_random_datalist(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` random greyscale PNGs with random labels: decoding cost like real 8-bit images."""
    rng = np.random.default_rng(seed)
    items = []
    writes = []
    for i in range(count):
        path = root / "images" / f"{i:05d}.png"
        writes.append(partial(save_png_atomic, path, rng.integers(0, 256, size=(size, size), dtype=np.uint8)))
        items.append({"image": str(path), "id": path.name, "patient": f"p{i}",
                      "label": rng.integers(0, 2, len(OBSERVATIONS)).astype(float).tolist(),
                      "label_mask": [1] * len(OBSERVATIONS), "raw_label": [0] * len(OBSERVATIONS)})
    run_parallel(writes)
    datalist = root / "datalist.json"
    write_datalist(datalist, {"observations": list(OBSERVATIONS), "policy": {}, "root": str(root),
                              "training": items, "validation": items[: max(2, len(items) // 8)]})
    return datalist


def pipeline_rate(args: argparse.Namespace, datalist: Path, out: Path, use_gpu: bool) -> dict:
    """Images/s of the bundle trainer over the timed iterations, plus the cache build time.

    Iteration ``warmup`` has its operators counted, from its batch copy to its handlers (slowly: the
    device drains meanwhile); after one iteration to refill its queue, the next ``profile_iterations``
    are profiled whole, batch fetches included; all before the clock starts.
    """
    start = time.perf_counter()
    workflow = make_workflow(
        datalist=str(datalist), output_dir=str(out), network_name=args.arch, image_size=args.image_size,
        batch_size=args.batch_size, num_workers=args.num_workers, max_epochs=1, val_interval=2, resume=False,
        amp=use_gpu, channels_last=use_gpu, compile=args.compile, **args.overrides,
    )
    trainer = workflow.parser.get_parsed_content("train#trainer")  # builds the uint8 cache
    cache_seconds = time.perf_counter() - start
    loader = loader_rate(workflow.parser.get_parsed_content("train#dataloader"), args.warmup, args.iterations)
    device = torch.device("cuda" if use_gpu else "cpu")
    counter = None if args.compile else OpCounter()
    if counter is not None:
        within_events(trainer, Events.ITERATION_STARTED(once=args.warmup), Events.ITERATION_COMPLETED(once=args.warmup),
                      counter)
    timeline = profiled(args, device, "pipeline")
    if timeline is not None:
        within_events(trainer, Events.ITERATION_COMPLETED(once=args.warmup + 1),
                      Events.ITERATION_COMPLETED(once=args.warmup + 1 + args.profile_iterations), timeline)
    untimed = args.warmup + (1 + args.profile_iterations if timeline is not None else 0)
    elapsed = time_trainer(trainer, untimed, args.iterations, device)
    return {"pipeline_img_per_s": args.iterations * args.batch_size / elapsed, "cache_build_s": cache_seconds,
            "loader_img_per_s": loader, "ops": counter, "timeline": timeline}


def profiled(args: argparse.Namespace, device: torch.device, name: str) -> DeviceTimeline | None:
    """The device timeline for one measurement, with its trace file when ``--trace`` asks for one."""
    if args.profile_iterations < 1:
        return None
    return DeviceTimeline(device, args.trace / f"{args.out.name}_{name}.json.gz" if args.trace else None)


def bare_rate(args: argparse.Namespace, device: torch.device, use_gpu: bool) -> dict:
    """Images/s of forward + masked loss + backward + AdamW step on device-resident tensors."""
    fmt = torch.channels_last if use_gpu else torch.contiguous_format
    net = build_classifier(args.arch).to(device, memory_format=fmt)
    step_net = torch.compile(net) if args.compile else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = MaskedBCEWithLogitsLoss()
    x = torch.rand(args.batch_size, 1, args.image_size, args.image_size, device=device).to(memory_format=fmt)
    y = torch.randint(0, 2, (args.batch_size, len(OBSERVATIONS)), device=device).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_gpu):
            loss = loss_fn(step_net(x), y)
        loss.backward()
        opt.step()

    rate = args.iterations * args.batch_size / time_steps(step, args.warmup, args.iterations, device)
    timeline = profiled(args, device, "bare")
    if timeline is not None:
        step()  # unsynchronised, so the profiled steps queue behind it as in a steady loop
        with timeline:
            for _ in range(args.profile_iterations):
                step()
    counter = None
    if not args.compile:  # counting would run the compiled graph through Python dispatch: not the measured step
        with OpCounter() as counter:
            step()
    return {"bare_img_per_s": rate, "ops": counter, "timeline": timeline}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_gpu = torch.cuda.is_available()
    if not use_gpu and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU smoke mode", file=sys.stderr)
        return 2
    device = torch.device("cuda" if use_gpu else "cpu")
    count = args.batch_size * (args.warmup + 1 + args.profile_iterations + args.iterations)
    with tempfile.TemporaryDirectory(prefix="cxr_throughput_") as tmp:
        datalist = write_random_datalist(Path(tmp) / "data", count, args.image_size)
        pipe = pipeline_rate(args, datalist, Path(tmp) / "out", use_gpu)
    bare = bare_rate(args, device, use_gpu)
    bare_ops, pipe_ops = bare["ops"], pipe["ops"]
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "bare_img_per_s": round(bare["bare_img_per_s"], 2),
        "pipeline_img_per_s": round(pipe["pipeline_img_per_s"], 2),
        "ratio": round(pipe["pipeline_img_per_s"] / bare["bare_img_per_s"], 3),
        "cache_build_s": round(pipe["cache_build_s"], 1),
        "loader_img_per_s": round(pipe["loader_img_per_s"], 2),
        "ops_per_iteration": None if bare_ops is None else {
            "bare": bare_ops.total, "pipeline": pipe_ops.total,
            "pipeline_extra": dict((pipe_ops.ops - bare_ops.ops).most_common(8))},
        "device_timeline": None if pipe["timeline"] is None else {
            "iterations": args.profile_iterations, "bare": bare["timeline"].summary(args.profile_iterations),
            "pipeline": pipe["timeline"].summary(args.profile_iterations)},
        "settings": {"arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size,
                     "iterations": args.iterations, "warmup": args.warmup,
                     "profile_iterations": args.profile_iterations, "num_workers": args.num_workers,
                     "amp_bf16": use_gpu, "channels_last": use_gpu, "compile": args.compile, "smoke": args.smoke,
                     "cudnn": cudnn_flags(), "overrides": args.overrides},
    }
    write_json_atomic(args.out.with_suffix(".json"), result)
    s = result["settings"]
    table = (
        f"# Training throughput ({'CPU smoke' if args.smoke else 'GPU'})\n\n"
        f"{result['device']}, torch {result['torch']}, {result['date']}\n\n"
        f"{s['arch']}, {s['image_size']} px, batch {s['batch_size']}, {s['iterations']} timed iterations after "
        f"{s['warmup']} warm-up, bf16+channels_last: {use_gpu}, torch.compile: {s['compile']}, cuDNN deterministic: "
        f"{s['cudnn']['deterministic']}, autotune: {s['cudnn']['benchmark']}"
        f"{', overrides: ' + json.dumps(s['overrides']) if s['overrides'] else ''}\n\n"
        "| measurement | images/s |\n|---|---|\n"
        f"| bare model step | {result['bare_img_per_s']} |\n"
        f"| bundle pipeline (cache -> trainer) | {result['pipeline_img_per_s']} |\n"
        f"| ratio | {result['ratio']} |\n"
        f"| DataLoader alone (cache -> augmented batches, no model) | {result['loader_img_per_s']} |\n\n"
        f"uint8 cache build: {result['cache_build_s']} s (not in the pipeline rate)\n"
    )
    ops = result["ops_per_iteration"]
    if ops:
        table += (f"\nATen operators dispatched per iteration (about one kernel launch each on a GPU): bare step "
                  f"{ops['bare']}, pipeline {ops['pipeline']}; the pipeline's extra: "
                  f"{', '.join(f'{k} x{v}' for k, v in ops['pipeline_extra'].items()) or 'none'}\n")
    timeline = result["device_timeline"]
    if timeline:
        busy = "kernels, copies and memsets" if use_gpu else "ATen operators (a code-path check on a CPU)"
        table += (f"\nDevice timeline over {timeline['iterations']} profiled iterations (torch.profiler; busy = "
                  f"union of {busy}; a lower busy fraction than the bare step's is time the device waited for the "
                  "host):\n\n| measurement | busy ms / iteration | span ms / iteration | busy fraction |\n|---|---|---|---|\n"
                  + "".join(f"| {name} | {t['busy_ms_per_iteration']} | {t['span_ms_per_iteration']} | "
                            f"{t['busy_fraction']} |\n" if "error" not in t else f"| {name} | {t['error']} | | |\n"
                            for name, t in (("bare step", timeline["bare"]), ("pipeline", timeline["pipeline"]))))
    write_text_atomic(args.out.with_suffix(".md"), table)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
