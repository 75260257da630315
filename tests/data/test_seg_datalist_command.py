import json
from pathlib import Path

import numpy as np
import pytest

from cxrdoll.cli import main
from cxrdoll.data.segmentation import datalist_classes, load_segmentation_datalist
from cxrdoll.io import save_png_atomic


def test_relative_src_is_resolved_against_the_working_directory(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(shared_data.parent)
    out = tmp_path / "lists" / "lungs.json"
    assert main(["seg-datalist", "--layout", "shared-lungs", "--src",
                 f"{shared_data.name}/seg_lungs_covid_ieee8023_v7labs", "--out", str(out)]) == 0
    monkeypatch.chdir(tmp_path)  # the datalist must not depend on where it was written from
    items = load_segmentation_datalist(out, "training")
    assert len(items) == 122
    assert all(Path(item["image"]).is_file() for item in items)


def _lungs_source(root: Path, n: int = 3) -> Path:
    """A shared-lungs layout: images/, masks/lung/ and a datalist.json of relative paths."""
    items = []
    for i in range(n):
        save_png_atomic(root / "images" / f"p{i}.png", np.full((8, 8), 100, np.uint8))
        save_png_atomic(root / "masks" / "lung" / f"p{i}.png", np.zeros((8, 8), np.uint8))
        items.append({"image": f"images/p{i}.png", "label": f"masks/lung/p{i}.png"})
    (root / "datalist.json").write_text(json.dumps({"training": items[:-1], "validation": items[-1:]}))
    return root


def test_bad_fields_name_the_file_and_field(tmp_path, capsys):
    src = _lungs_source(tmp_path / "src")
    source = src / "datalist.json"
    good = json.loads(source.read_text())
    argv = ["seg-datalist", "--layout", "shared-lungs", "--src", str(src), "--out", str(tmp_path / "out.json")]
    source.write_text(json.dumps({**good, "training": [{**good["training"][0], "label": 5}]}))
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {source}: training[0].label must be a file path, got 5\n"
    source.write_text(json.dumps({**good, "training": "x"}))
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {source}: 'training' must be a list, not str\n"
    source.write_text(json.dumps({**good, "classes": "lung"}))
    with pytest.raises(ValueError) as err:
        datalist_classes(source)
    assert str(err.value) == f"{source}: 'classes' must be a non-empty list of class names, got 'lung'"
    assert not (tmp_path / "out.json").exists()


def test_items_with_missing_images_are_skipped_and_counted(tmp_path, capsys):
    src = _lungs_source(tmp_path / "src")
    (src / "images" / "p0.png").unlink()
    out = tmp_path / "out.json"
    assert main(["seg-datalist", "--layout", "shared-lungs", "--src", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"warning: training item 'p0': {src / 'images' / 'p0.png'} not found; skipped\n" in printed
    assert printed.endswith("1 training, 1 validation, classes ['lung']; skipped 1 items with missing files\n")
    assert [item["id"] for item in load_segmentation_datalist(out, "training")] == ["p1"]


@pytest.mark.parametrize("value", ["-0.5", "1", "3", "nan", "x"])
def test_a_validation_fraction_outside_0_1_is_a_usage_error(tmp_path, capsys, value):
    """A negative fraction silently took a negative slice (-0.1: all but a tenth of the images in validation), 1
    or more put all of them there and failed with 'no training item has all its files'; nan failed in round()."""
    with pytest.raises(SystemExit) as exit_info:
        main(["seg-datalist", "--layout", "scr", "--src", str(tmp_path), "--masks", str(tmp_path),
              "--val-fraction", value, "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    assert f"argument --val-fraction: {value!r} is not a fraction in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
