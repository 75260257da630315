"""``python -m cxrdoll seg-datalist``: write a downstream segmentation datalist from a known layout.

(The synthetic organ and lesion sets ship their own ``datalist.json`` in this format.)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cxrdoll.argtypes import fraction
from cxrdoll.data.datalist import write_datalist

HELP = "write a downstream segmentation datalist from the SCR/JSRT layout or the shared lung set"
LAYOUTS = ("scr", "shared-lungs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help=(
        "scr: --src holds the JSRT *.IMG files, --masks the SCR folders (<structure>/<name>.gif); "
        "shared-lungs: --src is seg_lungs_covid_ieee8023_v7labs (its patient split and ignore masks)"))
    parser.add_argument("--src", required=True, type=Path, help="source folder (what it holds depends on --layout)")
    parser.add_argument("--masks", type=Path, help="SCR mask folder (layout scr)")
    parser.add_argument("--val-fraction", type=fraction, default=0.2, help="fraction of images for validation, in [0, 1), for layouts without a split of their own (scr) "
                        "(default: %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="datalist JSON to write")


def run(args: argparse.Namespace) -> int:
    from cxrdoll.data.segmentation import scr_datalist, shared_lungs_datalist  # torch and MONAI: not for --help

    # Paths given relative to the working directory must not be read relative to the datalist's folder.
    args.src = args.src.resolve()
    args.masks = args.masks.resolve() if args.masks is not None else None
    if args.layout == "scr":
        if args.masks is None:
            raise ValueError("--layout scr needs --masks (the SCR mask folder)")
        datalist = scr_datalist(args.src, args.masks, args.val_fraction)
    else:
        datalist = shared_lungs_datalist(args.src)
    skipped = drop_missing(datalist)
    if not datalist["training"]:
        raise ValueError(f"{args.src}: no training item has all its files; nothing written")
    write_datalist(args.out, datalist)
    print(f"wrote {args.out}: {len(datalist['training'])} training, {len(datalist['validation'])} validation, "
          f"classes {datalist['classes']}" + (f"; skipped {skipped} items with missing files" if skipped else ""))
    return 0


def drop_missing(datalist: dict[str, Any]) -> int:
    """Remove items whose image or mask file does not exist, with a warning line each, and return
    how many: a training run would otherwise fail on them much later."""
    skipped = 0
    for split in ("training", "validation"):
        kept = []
        for item in datalist[split]:
            missing = [p for p in (item["image"], *item["label"]) if not Path(p).is_file()]
            if missing:
                print(f"warning: {split} item {item['id']!r}: {', '.join(missing)} not found; skipped")
            else:
                kept.append(item)
        skipped += len(datalist[split]) - len(kept)
        datalist[split] = kept
    return skipped
