import csv

import pytest

from cxrdoll.cli import main
from cxrdoll.constants import CHEXPERT_COLUMNS
from cxrdoll.data.shared_sets import NIH_TO_CHEXPERT, lung_validation_patients, read_shared_sets, write_chexpert_layout


def _fake_nih(root, rows):
    folder = root / "cls_nih_cxr14_64px"
    (folder / "images").mkdir(parents=True)
    header = ["image", "abnormal", "patient_id", "age", "sex", "view", *NIH_TO_CHEXPERT, "Emphysema"]
    with (folder / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        for i, findings in enumerate(rows):
            (folder / "images" / f"{i}.png").write_bytes(b"png")
            row = {k: 0 for k in header}
            row.update(image=f"images/{i}.png", patient_id=str(i // 2), age="40", sex="F", view="AP",
                       abnormal=int(bool(findings)), **{f: 1 for f in findings})
            writer.writerow(row)


def test_nih_mapping_merges_findings_and_leaves_unmapped_blank(tmp_path):
    _fake_nih(tmp_path, [[], ["Mass", "Nodule", "Effusion"], ["Emphysema"], ["Consolidation"], ["Infiltration"]])
    items = read_shared_sets(tmp_path, ["cls_nih_cxr14_64px"])
    assert items[0].labels["No Finding"] == 1 and items[0].labels["Pleural Effusion"] == 0
    assert items[1].labels["Lung Lesion"] == 1 and items[1].labels["Pleural Effusion"] == 1
    assert items[2].labels["No Finding"] == 0 and not any(v for k, v in items[2].labels.items() if k != "No Finding")
    # a kind of opacity is an opacity (CheXpert's hierarchy); NIH's Infiltration alone says nothing more
    assert [item.labels["Lung Opacity"] for item in items] == [0, 1, 0, 1, 1]
    assert items[4].labels["Consolidation"] == 0
    assert "Support Devices" not in items[0].labels  # NIH says nothing about devices: unknown, not negative

    csv_path = write_chexpert_layout(items, tmp_path / "out")
    rows = list(csv.reader(csv_path.open()))
    assert tuple(rows[0]) == CHEXPERT_COLUMNS
    # images 0 and 1 share patient 0: same patient folder, two studies
    assert rows[1][0].split("/")[2] == rows[2][0].split("/")[2] != rows[3][0].split("/")[2]
    assert rows[2][0].endswith("study2/view1_frontal.png")
    assert rows[1][CHEXPERT_COLUMNS.index("Support Devices")] == ""
    assert rows[1][CHEXPERT_COLUMNS.index("AP/PA")] == "AP"


def test_missing_column_names_file_and_row(tmp_path):
    folder = tmp_path / "cls_pneumonia_kermany"
    folder.mkdir()
    (folder / "labels.csv").write_text("image,label\nimages/a.png,NORMAL\n")
    with pytest.raises(ValueError, match=r"labels.csv: row 2 has no column 'pneumonia'"):
        read_shared_sets(tmp_path, ["cls_pneumonia_kermany"])


def test_truncated_row_and_bad_cell_name_file_row_and_column(tmp_path, capsys):
    _fake_nih(tmp_path, [[], ["Mass"], []])
    labels = tmp_path / "cls_nih_cxr14_64px" / "labels.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines)[:-20])  # the last row cut short
    argv = ["prepare-shared-cls", "--shared", str(tmp_path), "--out", str(tmp_path / "out"),
            "--sources", "cls_nih_cxr14_64px"]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {labels}: row 4, column 'Effusion': no value (row cut short?)\n"
    lines[2] = lines[2].replace("images/1.png,1,", "images/1.png,yes,")
    labels.write_text("\n".join(lines) + "\n")
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {labels}: row 3, column 'abnormal': value 'yes' is not 0 or 1\n"
    assert not (tmp_path / "out").exists()


def test_real_shared_sets_convert(shared_data, tmp_path, capsys):
    assert main(["prepare-shared-cls", "--shared", str(shared_data), "--out", str(tmp_path)]) == 0
    assert "left out 17 images of patients in seg_lungs_covid_ieee8023_v7labs's validation split" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "CheXpert-shared" / "train.csv").open()))
    assert len(rows) == 606 - 17
    assert all((tmp_path / r["Path"]).is_file() for r in rows)
    # no image of a patient the adapters are validated on reaches the classifiers or pre-training
    held_out = {p.split(":", 1)[1] for p in lung_validation_patients(shared_data)}
    covid = shared_data / "cls_covid_ieee8023"
    patient_of = {str(covid / r["image"]): r["patientid"] for r in csv.DictReader((covid / "labels.csv").open())}
    used = [r["original"] for r in csv.DictReader((tmp_path / "CheXpert-shared" / "sources.csv").open())]
    assert len(held_out) == 16 and not {patient_of[o] for o in used if o in patient_of} & held_out
    pneumonia = sum(r["Pneumonia"] == "1" for r in rows)
    no_finding = sum(r["No Finding"] == "1" for r in rows)
    assert pneumonia > 250 and no_finding > 150
    assert not any(r["No Finding"] == "1" and r["Pneumonia"] == "1" for r in rows)


def test_rewriting_the_layout_replaces_an_image_whose_path_now_names_another(tmp_path, capsys):
    """Patient numbers follow --sources: a re-run into the same folder must not keep the old image."""
    _fake_nih(tmp_path, [[], [], ["Mass"]])
    for i in range(3):
        (tmp_path / "cls_nih_cxr14_64px" / "images" / f"{i}.png").write_bytes(f"image {i}".encode())
    items = read_shared_sets(tmp_path, ["cls_nih_cxr14_64px"])
    out = tmp_path / "out"
    write_chexpert_layout(items, out)
    csv_path = write_chexpert_layout(items[2:], out)  # image 2 is now patient00001's first study
    (row,) = list(csv.DictReader(csv_path.open()))
    assert row["Path"].startswith("CheXpert-shared/train/patient00001/study1/")
    assert (out / row["Path"]).read_bytes() == b"image 2" and row["Lung Lesion"] == "1"


def test_repeated_sources_options_add_up_once_each(tmp_path, monkeypatch, capsys):
    """'--sources A --sources B' read only B; a set named twice would be read twice."""
    asked = []

    def read(shared, sources):
        asked.append(list(sources))
        raise ValueError("stop")

    monkeypatch.setattr("cxrdoll.data.shared_sets_command.read_shared_sets", read)
    argv = ["prepare-shared-cls", "--shared", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*argv, "--sources", "cls_nih_cxr14_64px", "--sources", "cls_covid_ieee8023", "cls_nih_cxr14_64px"]) == 2
    assert main(argv) == 2
    assert asked == [["cls_nih_cxr14_64px", "cls_covid_ieee8023"],
                     ["cls_nih_cxr14_64px", "cls_covid_ieee8023", "cls_pneumonia_kermany"]]
