from pathlib import Path

from cxrdoll.cli import main
from cxrdoll.data.segmentation import load_segmentation_datalist


def test_relative_src_is_resolved_against_the_working_directory(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(shared_data.parent)
    out = tmp_path / "lists" / "lungs.json"
    assert main(["seg-datalist", "--layout", "shared-lungs", "--src",
                 f"{shared_data.name}/seg_lungs_covid_ieee8023_v7labs", "--out", str(out)]) == 0
    monkeypatch.chdir(tmp_path)  # the datalist must not depend on where it was written from
    items = load_segmentation_datalist(out, "training")
    assert len(items) == 122
    assert all(Path(item["image"]).is_file() for item in items)
