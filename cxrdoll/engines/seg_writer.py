"""Write segmentation inference results: a mask and a probability map per class, at the input's size."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from cxrdoll.data.unreadable import readable
from cxrdoll.io import relative_output, same_file_key, save_png_atomic, write_bytes_atomic

FORMATS: tuple[str, ...] = ("png", "nifti")


def file_safe(name: str) -> str:
    """A class name as a file name part: ``left lung`` -> ``left_lung``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def save_nifti_atomic(path: str | Path, array: np.ndarray) -> None:
    """A 2D array as ``.nii.gz`` in (row, column) order, so ``cxrdoll.data.segmentation.read_array`` reads it back."""
    import nibabel as nib

    write_bytes_atomic(path, gzip.compress(nib.Nifti1Image(array, np.eye(4)).to_bytes()))


class SegmentationWriter:
    """Evaluator handler: for each image ``OUT/<id>/<class>_mask.{png,nii.gz}`` and ``<class>_prob...``.

    Expects ``pred`` to hold probabilities ``(B, C, S, S)`` (sigmoid applied) and the batch to carry
    ``id`` and ``orig_shape``. Probabilities are resized bilinearly to the original image size,
    then thresholded, so masks line up with the input file. PNG masks are 0/255 and PNG
    probabilities are ``round(255 p)``; NIfTI masks are uint8 0/1 and probabilities float32.
    """

    def __init__(
        self, output_dir: str | Path, class_names: Sequence[str], output_format: str = "png", threshold: float = 0.5
    ) -> None:
        if output_format not in FORMATS:
            raise ValueError(f"unknown output_format {output_format!r}; expected one of {list(FORMATS)}")
        self.output_dir = Path(output_dir)
        self.class_names = [file_safe(c) for c in class_names]
        self.output_format = output_format
        self.threshold = threshold
        self.written: list[Path] = []
        self._ids: dict[str, str] = {}  # same_file_key of an id -> the id written

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        pred = torch.as_tensor(engine.state.output["pred"]).detach().float().cpu()
        batch = engine.state.batch
        if pred.ndim != 4 or pred.shape[1] != len(self.class_names):
            raise ValueError(f"expected predictions (B, {len(self.class_names)}, H, W), got {tuple(pred.shape)}")
        read = readable(batch, len(pred))  # unreadable images are listed by UnreadableReport instead
        for prob, image_id, shape, ok in zip(pred, batch["id"], batch["orig_shape"], read):
            if not ok:
                continue
            size = [int(s) for s in shape]
            prob = F.interpolate(prob[None], size=size, mode="bilinear", align_corners=False)[0].clamp(0, 1).numpy()
            self.write(str(image_id), prob)

    def write(self, image_id: str, prob: np.ndarray) -> None:
        """Write one image's files; an id already written by this writer (in any case or Unicode form) is refused,
        since its files would silently replace the earlier image's, and so is one naming a folder
        outside ``output_dir`` (``..``, an absolute path: ids come from input data)."""
        try:
            folder = self.output_dir / relative_output(image_id, "id")
        except ValueError as err:
            raise ValueError(f"{self.output_dir}: {err}") from None
        earlier = self._ids.get(same_file_key(image_id))
        if earlier is not None:
            raise ValueError(f"{folder}: id {image_id!r} was already written (as {earlier!r}) in this run; "
                             "two inputs with one id would overwrite each other's outputs")
        self._ids[same_file_key(image_id)] = image_id
        for name, p in zip(self.class_names, prob):
            mask = p > self.threshold
            if self.output_format == "png":
                save_png_atomic(folder / f"{name}_mask.png", mask.astype(np.uint8) * 255)
                save_png_atomic(folder / f"{name}_prob.png", np.rint(p * 255).astype(np.uint8))
            else:
                save_nifti_atomic(folder / f"{name}_mask.nii.gz", mask.astype(np.uint8))
                save_nifti_atomic(folder / f"{name}_prob.nii.gz", p.astype(np.float32))
        self.written.append(folder)
