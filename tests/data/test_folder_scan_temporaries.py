"""Folder scans skip what a killed atomic write leaves behind (``.x.png.<random>.tmp.png``): review
(temporaries, tmpchk/) found ``image_items`` listing ``.organ00000.png.a1b2c3d4.tmp.png`` as an image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cxrdoll.data.classification import image_items
from cxrdoll.data.segmentation import folder_datalist, folder_items
from cxrdoll.io import is_temporary

LEFTOVER = ".organ00000.png.a1b2c3d4.tmp.png"


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    return path


def test_the_leftover_name_is_one_of_the_atomic_writes():
    assert is_temporary(LEFTOVER)


def test_image_items_leaves_out_leftover_temporaries(tmp_path):
    _png(tmp_path / "organ00000.png")
    _png(tmp_path / LEFTOVER)
    _png(tmp_path / "sub" / ".b.png.zz99yy88.tmp.png")
    assert [item["id"] for item in image_items(tmp_path)] == ["organ00000.png"]


def test_segmentation_folder_scans_leave_out_leftover_temporaries(tmp_path):
    for folder in ("images", "masks"):
        _png(tmp_path / folder / "organ00000.png")
        _png(tmp_path / folder / LEFTOVER)  # as an image it had no mask; as a mask, no image
    datalist = folder_datalist(tmp_path / "images", {"lung": tmp_path / "masks"}, val_fraction=0)
    assert [item["id"] for item in datalist["training"]] == ["organ00000"]
    assert datalist["training"][0]["label"] == [str((tmp_path / "masks" / "organ00000.png").resolve())]
    assert [item["id"] for item in folder_items(tmp_path / "images")] == ["organ00000"]
