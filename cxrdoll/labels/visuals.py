"""Looking at labels: overlay PNGs for a sample of images and a TensorBoard image handler.

Both are handlers for :class:`cxrdoll.labels.runner.LabelRunner`: callables that receive each
:class:`LabelResult` and keep only the first ``max_images`` (per rank).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.io import safe_file_name, write_bytes_atomic
from cxrdoll.labels.writer import without_image_suffix


def overlay_rgb(image: np.ndarray, soft: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 ``(H, W, 3)``: the grey image blended with the soft map in the 'jet' colour map.

    The blend is weighted by the map itself, so pixels without evidence show the plain image.
    """
    from matplotlib import colormaps

    grey = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    heat = colormaps["jet"](np.clip(soft, 0, 1))[..., :3].astype(np.float32)
    weight = alpha * np.clip(soft, 0, 1)[..., None]
    rgb = grey[..., None] * (1 - weight) + heat * weight
    return (rgb * 255 + 0.5).astype(np.uint8)


def _safe_name(item_id: str) -> str:
    """The id without its image extension as one flat file name: 'p1/view1.jpg' -> 'p1_view1_<hash>'.

    A name that had to change (folders joined, odd characters replaced) ends in a hash of the whole
    id: 'a/b.jpg' and 'a_b.jpg' both flatten to 'a_b', and one's overlay overwrote the other's
    (``safe_file_name`` leaves room for the hash).
    """
    item_id = str(item_id)
    stem = without_image_suffix(item_id)
    name = safe_file_name(stem, item_id)
    if name == stem:
        return name
    return f"{name}_{hashlib.sha256(os.fsencode(item_id)).hexdigest()[:8]}"


class OverlayWriter:
    """Writes ``out_dir/<id>.png``: the image, then one panel per positive observation (map + mask outline).

    Overlays already in ``out_dir`` count towards ``max_images``: a resumed run adds none beyond it.
    """

    def __init__(self, out_dir: str | os.PathLike, max_images: int = 16, alpha: float = 0.5) -> None:
        self.out_dir = Path(out_dir)
        self.max_images = int(max_images)
        self.alpha = float(alpha)
        self.count = len(list(self.out_dir.glob("*.png"))) if self.out_dir.is_dir() else 0

    def __call__(self, result) -> None:
        if self.count >= self.max_images:
            return
        self.count += 1
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        image = result.image.detach().cpu().numpy()[0]
        channels = [c for c in np.flatnonzero(result.state == 1)]
        fig, axes = plt.subplots(1, 1 + len(channels), figsize=(3 * (1 + len(channels)), 3.3), squeeze=False)
        axes[0, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[0, 0].set_title("image" if channels else "image (no positive target)", fontsize=8)
        for ax, c in zip(axes[0, 1:], channels):
            ax.imshow(overlay_rgb(image, result.soft[c], self.alpha))
            if result.mask[c].any():
                ax.contour(result.mask[c], levels=[0.5], colors="white", linewidths=0.8)
            ax.set_title(OBSERVATIONS[c], fontsize=8)
        for ax in axes[0]:
            ax.axis("off")
        fig.suptitle(str(result.id), fontsize=7)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        write_bytes_atomic(self.out_dir / f"{_safe_name(result.id)}.png", buffer.getvalue())


class TensorBoardLabelImages:
    """Logs the first ``max_images`` labelled images to TensorBoard: one overlay per positive observation.

    Tags are ``labels/<observation>``; the global step is the running image count of this rank.
    """

    def __init__(self, log_dir: str | os.PathLike, max_images: int = 16, alpha: float = 0.5) -> None:
        self.log_dir = str(log_dir)
        self.writer = None  # made with the first image: a run refused before labelling leaves no folder
        self.max_images = int(max_images)
        self.alpha = float(alpha)
        self.count = 0

    def __call__(self, result) -> None:
        if self.count >= self.max_images:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.log_dir)
        image = result.image.detach().cpu().numpy()[0]
        for c in np.flatnonzero(result.state == 1):
            rgb = overlay_rgb(image, result.soft[c], self.alpha)
            self.writer.add_image(f"labels/{OBSERVATIONS[c]}", rgb, global_step=self.count, dataformats="HWC")
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()  # flushes first
