"""``python -m cxrdoll prepare-nih-boxes``: NIH ChestX-ray14's bounding boxes -> truth files for label-quality."""

from __future__ import annotations

import argparse
import time

HELP = "Turn NIH ChestX-ray14's radiologist bounding boxes (BBox_List_2017.csv) into label-quality truth files."

EPILOG = """\
examples:
  python -m cxrdoll prepare-nih-boxes --root /data/NIH-ChestX-ray14 --out /data/nih_box_truth
  python -m cxrdoll prepare-nih-boxes --root /data/NIH-ChestX-ray14 --boxes /data/BBox_List_2017.csv \\
      --out /data/nih_box_truth

Each boxed image becomes OUT/<id without its suffix>.npz, where the labeller writes the label of the
prepare-nih datalist id (the image's path under --root as found, images_001/images/00013118_008.png):
give both commands the same --root. NIH boxed images of its test set (test_list.txt; the summary
counts any that are not there), so label the validation list of a prepare-nih --validation test-list
datalist (--sections "['validation']"). Boxes are pixel rectangles of the image; a pixel is inside
when its centre is. Findings are mapped as prepare-nih maps them (Infiltrate: Infiltration -> Lung
Opacity; Mass and Nodule -> Lung Lesion, their boxes united). Only the observations boxed on an image
are annotated there: NIH boxed some of each image's findings, so the others are unknown, never scored.
Rows in error messages are numbered like a spreadsheet (header = row 1).
Then: python -m cxrdoll label-quality --labels ... --truth OUT."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add = parser.add_argument
    add("--root", required=True, metavar="DIR",
        help="NIH ChestX-ray14 folder holding the images (prepare-nih's --root)")
    add("--out", required=True, metavar="DIR", help="truth folder (label-quality's --truth); truth files already "
                                                       "under it are refused unless --overwrite")
    add("--boxes", metavar="CSV", help="NIH's box list (default: ROOT/BBox_List_2017.csv)")
    add("--overwrite", action="store_true", help="remove the truth files already under OUT first")


def run(args: argparse.Namespace) -> int:
    from cxrdoll.labels.nih_boxes import convert  # torch: not for --help
    from cxrdoll.labels.truth_files import summary

    start = time.perf_counter()
    done = convert(args.root, args.out, boxes_csv=args.boxes, overwrite=args.overwrite, progress=None)
    cut = f", {done.clipped} clipped at the image's edge" if done.clipped else ""
    print(summary(done.written, done.folder, f" ({done.boxes} boxes{cut})", time.perf_counter() - start,
                  "images boxed", done.boxed))
    if done.outside_test_list:
        print(f"{done.outside_test_list} boxed image(s) are not in test_list.txt: a prepare-nih --validation "
              "test-list datalist's validation list does not hold them (label them from another datalist)")
    return 0
