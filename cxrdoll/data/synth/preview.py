"""Contact sheet of written phantoms with their true masks outlined, to check them by eye."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ...constants import OBSERVATIONS
from ...io import read_json, write_bytes_atomic

ABBREVIATIONS: dict[str, str] = {
    "Enlarged Cardiomediastinum": "ECM", "Cardiomegaly": "CM", "Lung Opacity": "LO", "Lung Lesion": "LL",
    "Edema": "ED", "Consolidation": "CO", "Pneumonia": "PN", "Atelectasis": "AT", "Pneumothorax": "PTX",
    "Pleural Effusion": "EFF", "Pleural Other": "PO", "Fracture": "FX", "Support Devices": "SD",
}
COLOURS: list[tuple[int, int, int]] = [
    (255, 80, 80), (255, 160, 0), (255, 240, 0), (120, 255, 0), (0, 220, 120), (0, 230, 230), (0, 140, 255),
    (120, 90, 255), (220, 80, 255), (255, 80, 180), (180, 140, 90), (255, 255, 255), (140, 255, 200),
]


def _outline(tile: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    edge = mask & ~ndimage.binary_erosion(mask)
    tile[edge] = colour


def _tile(image: np.ndarray, masks: list[tuple[np.ndarray, tuple[int, int, int]]], text: str, size: int) -> Image.Image:
    rgb = np.repeat(image[..., None], 3, axis=2)
    for mask, colour in masks:
        _outline(rgb, mask.astype(bool), colour)
    tile = Image.fromarray(rgb).resize((size, size), Image.NEAREST)
    ImageDraw.Draw(tile).text((3, 2), text, fill=(255, 255, 0))
    return tile


def write_preview(out: Path, n_frontal: int = 16, n_each: int = 4, tile: int = 256) -> Path:
    """``out/preview.png``: frontal phantoms (findings outlined), then organ and lesion samples."""
    out = Path(out)
    tiles: list[Image.Image] = []
    with open(out / "CheXpert-v1.0-small" / "train.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Frontal/Lateral"] == "Frontal"][:n_frontal]
    for row in rows:
        image = np.asarray(Image.open(out / row["Path"]).convert("L"))
        truth = np.load(out / "truth" / (row["Path"][: -len(".jpg")] + ".npz"))["mask"]
        found = [i for i in range(1, len(OBSERVATIONS)) if truth[i].any()]
        masks = [(truth[i], COLOURS[i - 1]) for i in found]
        text = " ".join(ABBREVIATIONS[OBSERVATIONS[i]] for i in found) or "No Finding"
        tiles.append(_tile(image, masks, text, tile))
    for name in ("organs", "lesions"):
        datalist = out / name / "datalist.json"
        if not datalist.is_file():
            continue
        data = read_json(datalist)
        for item in (data["training"] + data["validation"])[:n_each]:
            image = np.asarray(Image.open(datalist.parent / item["image"]).convert("L"))
            masks = [(np.asarray(Image.open(datalist.parent / p)) > 127, COLOURS[(3 * k) % len(COLOURS)]) for k, p in enumerate(item["label"])]
            tiles.append(_tile(image, masks, f"{name}: {', '.join(data['classes'])}"[:40], tile))
    if not tiles:
        raise ValueError(f"{out}: nothing to preview (no frontal training rows)")
    cols = 4
    rows_n = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile, rows_n * tile))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * tile, (k // cols) * tile))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    path = out / "preview.png"
    write_bytes_atomic(path, buf.getvalue())
    return path
