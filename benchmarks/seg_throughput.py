"""Segmentation pre-training throughput of cxr_seg_pretrain: end-to-end pipeline vs the bare model step.

    python benchmarks/seg_throughput.py            # GPU: densenet121 + U-Net, 320 px, batch 16, bf16 AMP
    python benchmarks/seg_throughput.py --smoke    # CPU smoke run: densenet_tiny, 64 px, batch 4

The pipeline rate runs the bundle's own trainer (train.json: PNG + DoLL ``.npz`` decoding ->
DataLoader -> SupervisedTrainer with the masked BCE + Dice loss) on random images and labels,
timed from the end of the warm-up iterations to the last iteration. The bare rate repeats the same
optimisation step (forward, loss, backward, AdamW) on tensors already on the device.
Results: JSON (keys ``device``, ``torch``, ``date``, ``bare_img_per_s``, ``pipeline_img_per_s``,
``ratio``) + a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cudnn_flags, device_name, loader_rate, run_parallel, time_steps, time_trainer  # noqa: E402
from cxrdoll.constants import OBSERVATIONS  # noqa: E402
from cxrdoll.data.datalist import write_datalist  # noqa: E402
from cxrdoll.engines.bundle_run import make_workflow  # noqa: E402
from cxrdoll.engines.seg_network import pretraining_segmenter  # noqa: E402
from cxrdoll.engines.segmentation import MaskedBCEDiceLoss  # noqa: E402
from cxrdoll.io import save_npz_atomic, save_png_atomic, write_json_atomic, write_text_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "cxr_seg_pretrain"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="small CPU run: densenet_tiny, 64 px, batch 4, 3 iterations")
    p.add_argument("--encoder", default="densenet121")
    p.add_argument("--decoder", default="unet", choices=["unet", "psp"])
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--iterations", type=int, default=60, help="timed iterations")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first (cuDNN autotune)")
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--out", type=Path, default=None, help="result stem (default results/seg_throughput[_cpu_smoke])")
    args = p.parse_args(argv)
    if args.smoke:
        args.encoder, args.image_size, args.batch_size = "densenet_tiny", 64, 4
        args.iterations, args.warmup, args.num_workers = 3, 1, 0
    if args.out is None:
        args.out = RESULTS / ("seg_throughput_cpu_smoke" if args.smoke else "seg_throughput")
    return args


def random_blob_masks(rng: np.random.Generator, size: int) -> np.ndarray:
    """14 binary masks, each empty or one random rectangle: compressible like the labeller's blobs."""
    masks = np.zeros((len(OBSERVATIONS), size, size), dtype=np.uint8)
    for channel in masks:
        if rng.random() < 0.5:
            y0, x0 = rng.integers(0, size // 2, 2)
            h, w = rng.integers(size // 8, size // 2, 2)
            channel[y0 : y0 + h, x0 : x0 + w] = 1
    return masks


def write_random_doll(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` random PNGs with random 14-channel DoLL labels (blob masks, states -1/0/1)."""
    rng = np.random.default_rng(seed)
    items = []
    writes = []
    for i in range(count):
        image, label = root / "images" / f"{i:05d}.png", root / "labels" / f"{i:05d}.npz"
        writes.append(partial(save_png_atomic, image, rng.integers(0, 256, size=(size, size), dtype=np.uint8)))
        writes.append(partial(save_npz_atomic, label, mask=random_blob_masks(rng, size),
                              state=rng.integers(-1, 2, len(OBSERVATIONS)).astype(np.int8)))
        items.append({"image": str(image), "label": str(label), "id": image.name})
    run_parallel(writes)
    datalist = root / "datalist.json"
    write_datalist(datalist, {"training": items, "validation": items[:2]})
    return datalist


def pipeline_rate(args: argparse.Namespace, datalist: Path, out: Path, use_gpu: bool) -> tuple[float, float]:
    """Images/s of the bundle trainer over the timed iterations (validation is never reached), and of its loader alone."""
    workflow = make_workflow(
        BUNDLE, datalist=str(datalist), output_dir=str(out), encoder_name=args.encoder, decoder=args.decoder,
        image_size=args.image_size, batch_size=args.batch_size, num_workers=args.num_workers, max_epochs=1,
        val_interval=2, resume=False, amp=use_gpu,
    )
    trainer = workflow.parser.get_parsed_content("train#trainer")
    loader = loader_rate(workflow.parser.get_parsed_content("train#dataloader"), args.warmup, args.iterations)
    device = torch.device("cuda" if use_gpu else "cpu")
    return args.iterations * args.batch_size / time_trainer(trainer, args.warmup, args.iterations, device), loader


def bare_rate(args: argparse.Namespace, device: torch.device, use_gpu: bool) -> float:
    """Images/s of forward + masked BCE/Dice + backward + AdamW step on device-resident tensors."""
    net = pretraining_segmenter(args.encoder, args.decoder).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = MaskedBCEDiceLoss()
    shape = (args.batch_size, len(OBSERVATIONS), args.image_size, args.image_size)
    x = torch.rand(args.batch_size, 1, args.image_size, args.image_size, device=device)
    y = (torch.rand(shape, device=device) < 0.2).float()
    y[:, 5] = float("nan")  # one ignored channel, as DoLL labels have

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_gpu):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    return args.iterations * args.batch_size / time_steps(step, args.warmup, args.iterations, device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_gpu = torch.cuda.is_available()
    if not use_gpu and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU smoke mode", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if use_gpu else "cpu")
    count = args.batch_size * (args.warmup + args.iterations)
    with tempfile.TemporaryDirectory(prefix="cxr_seg_throughput_") as tmp:
        datalist = write_random_doll(Path(tmp) / "data", count, args.image_size)
        pipe, loader = pipeline_rate(args, datalist, Path(tmp) / "out", use_gpu)
    bare = bare_rate(args, device, use_gpu)
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "bare_img_per_s": round(bare, 2),
        "pipeline_img_per_s": round(pipe, 2),
        "ratio": round(pipe / bare, 3),
        "loader_img_per_s": round(loader, 2),
        "settings": {"encoder": args.encoder, "decoder": args.decoder, "image_size": args.image_size,
                     "batch_size": args.batch_size, "iterations": args.iterations, "warmup": args.warmup,
                     "num_workers": args.num_workers, "amp_bf16": use_gpu, "smoke": args.smoke, "cudnn": cudnn_flags()},
    }
    write_json_atomic(args.out.with_suffix(".json"), result)
    s = result["settings"]
    write_text_atomic(args.out.with_suffix(".md"), (
        f"# Segmentation pre-training throughput ({'CPU smoke' if args.smoke else 'GPU'})\n\n"
        f"{result['device']}, torch {result['torch']}, {result['date']}\n\n"
        f"{s['encoder']} + {s['decoder']}, 14 DoLL channels, {s['image_size']} px, batch {s['batch_size']}, "
        f"{s['iterations']} timed iterations after {s['warmup']} warm-up, bf16 AMP: {use_gpu}, cuDNN deterministic: "
        f"{s['cudnn']['deterministic']}, autotune: {s['cudnn']['benchmark']}\n\n"
        "| measurement | images/s |\n|---|---|\n"
        f"| bare model step | {result['bare_img_per_s']} |\n"
        f"| bundle pipeline (PNG + npz -> trainer) | {result['pipeline_img_per_s']} |\n"
        f"| ratio | {result['ratio']} |\n"
        f"| DataLoader alone (PNG + npz -> batches, no model) | {result['loader_img_per_s']} |\n"
    ))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
