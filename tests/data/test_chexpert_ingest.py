"""CheXpert ingestion: policies, No Finding, patient split, views, paths, missing files, malformed CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxrdoll.cli import main
from cxrdoll.constants import CHEXPERT_COLUMNS, OBSERVATIONS
from cxrdoll.data.chexpert import LabelPolicy, build_datalist, read_chexpert_csv, split_patients
from cxrdoll.data.datalist import load_classification_datalist

NF, CARDIO, EDEMA, ATEL, SUPPORT = (OBSERVATIONS.index(o) for o in ("No Finding", "Cardiomegaly", "Edema", "Atelectasis", "Support Devices"))
PREFIX = "CheXpert-v1.0-small"


def row(patient: int, study: int = 1, view: str = "frontal", image: int = 1, **values: str) -> dict:
    """A CSV row; observation values by name with spaces as underscores (e.g. Pleural_Effusion="1.0")."""
    r = {c: "" for c in CHEXPERT_COLUMNS}
    r.update({"Path": f"{PREFIX}/train/patient{patient:05d}/study{study}/view{image}_{view}.jpg", "Sex": "Female",
              "Age": "60", "Frontal/Lateral": view.capitalize(), "AP/PA": "AP" if view == "frontal" else ""})
    r.update({k.replace("_", " "): v for k, v in values.items()})
    return r


def write_csv(path: Path, rows: list[dict], columns=CHEXPERT_COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]) + "\n")
    return path


def make_dataset(parent: Path, rows: list[dict], touch: bool = True) -> Path:
    """CSV at parent/CheXpert-v1.0-small/train.csv, with empty image files when ``touch``."""
    csv_path = write_csv(parent / PREFIX / "train.csv", rows)
    for r in rows if touch else []:
        (parent / r["Path"]).parent.mkdir(parents=True, exist_ok=True)
        (parent / r["Path"]).touch()
    return csv_path


def item_by_patient(datalist: dict) -> dict[str, dict]:
    return {it["patient"]: it for sec in ("training", "validation") for it in datalist[sec]}


# ---- label policies -------------------------------------------------------------------------


def test_uncertain_policies_global_and_per_observation():
    raw = np.full((1, 14), -1.0, dtype=np.float32)
    policy = LabelPolicy.build(uncertain="ones", uncertain_per="atelectasis=ignore, Cardiomegaly=zeros")
    label, mask = policy.apply(raw)
    assert label[0, EDEMA] == 1 and mask[0, EDEMA] == 1  # U-Ones
    assert label[0, CARDIO] == 0 and mask[0, CARDIO] == 1  # U-Zeros
    assert mask[0, ATEL] == 0  # U-Ignore
    assert label.dtype == np.float32 and mask.dtype == np.int8


def test_default_policy_is_u_ignore_blank_negative_and_derived_no_finding():
    """The paper's U-Ignore is the default (the CLI's --uncertain default is 'ignore' too): an
    uncertain Edema is masked, a blank one negative, and a blank No Finding beside the uncertain
    Edema is uncertain, hence masked."""
    raw = np.full((2, 14), np.nan, dtype=np.float32)
    raw[0, EDEMA] = -1
    for policy in (LabelPolicy(), LabelPolicy.build()):
        assert set(policy.uncertain.values()) == {"ignore"} and set(policy.blank.values()) == {"zeros"}
        label, mask = policy.apply(raw)
        assert (label[0, EDEMA], mask[0, EDEMA]) == (0, 0)
        assert (label[0, NF], mask[0, NF]) == (0, 0)
        assert (label[1] == 0).all() and (mask[1] == 1).all()


def test_an_explicit_no_finding_is_not_rederived():
    """Only a blank No Finding is derived: a written 1 or 0 stays, even beside a positive pathology."""
    raw = np.full((2, 14), np.nan, dtype=np.float32)
    raw[:, EDEMA] = 1
    raw[0, NF], raw[1, NF] = 1, np.nan
    label, mask = LabelPolicy.build().apply(raw)
    assert label[:, NF].tolist() == [1, 0] and mask[:, NF].tolist() == [1, 1]
    raw[:, EDEMA], raw[0, NF] = -1, 0  # only uncertain pathologies: a written 0 is not made uncertain
    label, mask = LabelPolicy.build(uncertain="ones").apply(raw)
    assert label[:, NF].tolist() == [0, 1] and mask[:, NF].tolist() == [1, 1]


def test_blank_policies_and_plain_values():
    raw = np.array([[np.nan] * 14, [1.0] * 7 + [0.0] * 7], dtype=np.float32)
    label, mask = LabelPolicy.build(blank="ignore", blank_per={"Edema": "zeros"}, no_finding="raw").apply(raw)
    assert mask[0].tolist() == [1 if i == EDEMA else 0 for i in range(14)] and label[0].sum() == 0
    assert label[1].tolist() == [1.0] * 7 + [0.0] * 7 and mask[1].tolist() == [1] * 14


@pytest.mark.parametrize(
    ("values", "uncertain", "blank", "expected"),
    [
        ({"Cardiomegaly": 1}, "ones", "ignore", (0, 1)),  # a pathology is positive: No Finding is false
        ({"Edema": -1}, "ignore", "zeros", (0, 0)),  # only uncertain: No Finding is uncertain
        ({"Edema": -1}, "ones", "zeros", (1, 1)),
        ({"Support Devices": 1}, "ones", "zeros", (0, 1)),  # devices are no pathology: blank policy
        ({"Support Devices": 1}, "ones", "ignore", (0, 0)),
    ],
)
def test_blank_no_finding_is_derived_from_pathologies(values, uncertain, blank, expected):
    raw = np.full((1, 14), np.nan, dtype=np.float32)
    for name, v in values.items():
        raw[0, OBSERVATIONS.index(name)] = v
    label, mask = LabelPolicy.build(uncertain=uncertain, blank=blank).apply(raw)
    assert (label[0, NF], mask[0, NF]) == expected
    raw_label, raw_mask = LabelPolicy.build(uncertain=uncertain, blank=blank, no_finding="raw").apply(raw)
    assert (raw_label[0, NF], raw_mask[0, NF]) == (0, 0 if blank == "ignore" else 1)


def test_policy_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown observation 'Cardio'; expected one of No Finding, "):
        LabelPolicy.build(uncertain_per="Cardio=ones")
    with pytest.raises(ValueError, match="uncertain policy 'Edema': expected OBSERVATION=POLICY"):
        LabelPolicy.build(uncertain_per="Edema")
    with pytest.raises(ValueError, match="blank policy for 'Edema' is 'ones'; expected one of zeros, ignore"):
        LabelPolicy.build(blank_per="Edema=ones")
    # A bad global value was reported as the policy of 'No Finding', the first observation.
    with pytest.raises(ValueError, match="^uncertain policy 'U-Ones'; expected one of ignore, ones, zeros$"):
        LabelPolicy.build(uncertain="U-Ones")
    with pytest.raises(ValueError, match="^blank policy 'nan'; expected one of zeros, ignore$"):
        LabelPolicy.build(blank="nan")


def test_policy_apply_names_a_wrong_shape_and_takes_rows_with_none_blanks():
    """One image's (14,) row failed with numpy's "too many indices", 13 columns with a broadcast error."""
    policy = LabelPolicy.build(uncertain="ones")
    row = [None] * 14
    row[EDEMA] = -1
    with pytest.raises(ValueError, match=r"raw labels must be \(N, 14\).*got shape \(14,\); one image's row is \[row\]"):
        policy.apply(np.array(row, dtype=np.float32))
    with pytest.raises(ValueError, match=r"raw labels must be \(N, 14\).*got shape \(1, 13\)$"):
        policy.apply(np.zeros((1, 13), np.float32))
    with pytest.raises(ValueError, match=r"raw labels must be numbers 1, 0, -1 or NaN/None for blank"):
        policy.apply([["yes"] * 14])
    label, mask = policy.apply([row])
    assert label[0, EDEMA] == 1 and mask[0].tolist() == [1] * 14 and label[0, NF] == 1  # No Finding derived: uncertain -> ones


# ---- patient split ---------------------------------------------------------------------------


def test_patient_split_is_seeded_and_never_shares_a_patient(tmp_path):
    rows = [row(p, s, image=i) for p in range(1, 41) for s in (1, 2) for i in (1, 2)]
    csv_path = make_dataset(tmp_path, rows, touch=False)
    result = build_datalist(tmp_path, csv_path, check_files=False, val_fraction=0.25, seed=3).to_dict()
    train = {it["patient"] for it in result["training"]}
    val = {it["patient"] for it in result["validation"]}
    assert not train & val and len(train | val) == 40 and len(val) == 10
    assert len(result["validation"]) == 40  # all 4 images of each validation patient
    # same seed, shuffled rows: same patients; another seed: other patients
    shuffled = make_dataset(tmp_path / "b", [rows[i] for i in np.random.default_rng(0).permutation(len(rows))], touch=False)
    again = build_datalist(tmp_path / "b", shuffled, check_files=False, val_fraction=0.25, seed=3).to_dict()
    assert {it["patient"] for it in again["validation"]} == val
    other = build_datalist(tmp_path, csv_path, check_files=False, val_fraction=0.25, seed=4).to_dict()
    assert {it["patient"] for it in other["validation"]} != val


def test_split_patients_edge_cases():
    assert split_patients(["a", "b"], 0.01, 0) and len(split_patients(["a", "b"], 0.9, 0)) == 1  # both sides non-empty
    assert split_patients(["a", "b", "c"], 0.0, 0) == set()
    with pytest.raises(ValueError, match="validation fraction must be in \\[0, 1\\), got 1.0"):
        split_patients(["a"], 1.0, 0)


def test_valid_csv_is_the_validation_list_and_patients_must_not_overlap(tmp_path):
    csv_path = make_dataset(tmp_path, [row(1), row(2)])
    valid = write_csv(tmp_path / PREFIX / "valid.csv", [row(9, Cardiomegaly="1.0")])
    (tmp_path / PREFIX / "train/patient00009/study1").mkdir(parents=True)
    (tmp_path / PREFIX / "train/patient00009/study1/view1_frontal.jpg").touch()
    result = build_datalist(tmp_path, csv_path, valid_csv="CheXpert-v1.0-small/valid.csv").to_dict()
    assert [it["patient"] for it in result["validation"]] == ["patient00009"]
    assert sorted(it["patient"] for it in result["training"]) == ["patient00001", "patient00002"]
    assert result["policy"]["split"] == {"method": "valid_csv", "valid_csv": str(valid)}
    assert result["policy"]["labels_csv"] == str(csv_path)
    write_csv(valid, [row(2)])
    with pytest.raises(ValueError, match="1 patient\\(s\\) appear in both .*train.csv and .*valid.csv \\(e.g. 'patient00002'\\)"):
        build_datalist(tmp_path, csv_path, valid_csv=valid)


# ---- views, paths, files ---------------------------------------------------------------------


def test_views_filter(tmp_path):
    csv_path = make_dataset(tmp_path, [row(1), row(1, view="lateral", image=2), row(2)], touch=False)
    frontal = build_datalist(tmp_path, csv_path, check_files=False, val_fraction=0)
    assert [Path(i).name for i in frontal.ids] == ["view1_frontal.jpg"] * 2 and frontal.skipped_views == 1
    everything = build_datalist(tmp_path, csv_path, check_files=False, val_fraction=0, views="all")
    assert len(everything.ids) == 3 and everything.meta["policy"]["views"] == ["frontal", "lateral"]
    lateral = build_datalist(tmp_path, csv_path, check_files=False, views=["Lateral"])
    assert [Path(i).name for i in lateral.ids] == ["view2_lateral.jpg"]
    only_lateral = make_dataset(tmp_path / "lat", [row(1, view="lateral"), row(2, view="lateral")], touch=False)
    with pytest.raises(ValueError, match=r"train.csv: no image left of 2 rows \(2 not of the views \['frontal'\], 0 missing files\)"):
        build_datalist(tmp_path / "lat", only_lateral, check_files=False, val_fraction=0.0)
    valid = write_csv(tmp_path / "lat" / PREFIX / "valid.csv", [row(9, view="lateral")])
    with pytest.raises(ValueError, match=r"train.csv and .*valid.csv: no image left of 3 rows \(3 not of the views"):
        build_datalist(tmp_path / "lat", only_lateral, valid_csv=valid, check_files=False)  # the valid CSV's rows count
    with pytest.raises(ValueError, match="views \\['side'\\]: expected a comma list of frontal, lateral, or 'all'"):
        build_datalist(tmp_path, csv_path, check_files=False, views="side")


def test_root_may_be_the_dataset_folder_or_its_parent(tmp_path):
    csv_path = make_dataset(tmp_path, [row(1)])
    image = str(tmp_path / PREFIX / "train/patient00001/study1/view1_frontal.jpg")
    from_parent = build_datalist(tmp_path, csv_path)
    from_folder = build_datalist(tmp_path / PREFIX, "train.csv")  # CSV found relative to --root
    assert from_parent.images == from_folder.images == [image]
    assert from_folder.ids == [f"{PREFIX}/train/patient00001/study1/view1_frontal.jpg"]
    renamed = tmp_path / "chexpert"
    (tmp_path / PREFIX).rename(renamed)
    assert build_datalist(renamed, renamed / "train.csv").images == [image.replace(PREFIX, "chexpert")]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("../outside/patient1/study1/view1_frontal.jpg", "contains '..'; paths must stay inside --root"),
        (f"{PREFIX}/train/../../patient1/study1/view1_frontal.jpg", "contains '..'; paths must stay inside --root"),
        ("/etc/patient1/study1/view1_frontal.jpg", "is absolute; paths must be relative to --root"),
        ("C:/data/patient1/study1/view1_frontal.jpg", "is absolute; paths must be relative to --root"),
        ("train\\patient1\\study1\\view1_frontal.jpg", "contains a backslash; use '/' between folders"),
        ("study1/view1_frontal.jpg", "has no patient folder; expected <patient>/<study>/<image>"),
    ],
)
def test_paths_leaving_the_root_are_rejected(tmp_path, path, problem):
    csv_path = make_dataset(tmp_path, [row(1), {**row(2), "Path": path}], touch=False)
    with pytest.raises(ValueError) as err:
        read_chexpert_csv(csv_path)
    assert str(err.value) == f"{csv_path} row 3, column 'Path': {path!r} {problem}"


def test_missing_files_one_summary_or_skipped(tmp_path):
    csv_path = make_dataset(tmp_path, [row(p) for p in range(1, 6)])
    for p in (2, 4, 5):
        (tmp_path / PREFIX / f"train/patient{p:05d}/study1/view1_frontal.jpg").unlink()
    with pytest.raises(FileNotFoundError) as err:
        build_datalist(tmp_path, csv_path)
    assert str(err.value) == (
        f"3 of 5 images listed in {csv_path} are missing under {tmp_path} ("
        + ", ".join(f"{PREFIX}/train/patient{p:05d}/study1/view1_frontal.jpg" for p in (2, 4, 5))
        + "). Skip them with --allow-missing, or build from the CSV alone with --no-check-files."
    )
    kept = build_datalist(tmp_path, csv_path, allow_missing=True, val_fraction=0)
    assert kept.patients == ["patient00001", "patient00003"] and len(kept.missing) == 3
    assert kept.label.shape == (2, 14)
    with pytest.raises(FileNotFoundError, match="None was found: --root should be the dataset folder"):
        build_datalist(tmp_path / PREFIX / "train", csv_path)


def test_no_check_files_needs_neither_images_nor_root(tmp_path):
    csv_path = make_dataset(tmp_path, [row(1)], touch=False)
    result = build_datalist(tmp_path / "not-there", csv_path, check_files=False)
    # no CheXpert-v1.0-small/ under the root: the root is taken to be the dataset folder itself
    assert result.images == [f"{tmp_path}/not-there/train/patient00001/study1/view1_frontal.jpg"]


# ---- malformed CSVs --------------------------------------------------------------------------


def test_missing_column_is_named(tmp_path):
    columns = [c for c in CHEXPERT_COLUMNS if c not in ("Edema", "Fracture")]
    csv_path = write_csv(tmp_path / "train.csv", [row(1)], columns)
    with pytest.raises(ValueError) as err:
        read_chexpert_csv(csv_path)
    assert str(err.value) == f"{csv_path} row 1 (header): missing column(s) 'Edema', 'Fracture'"


def test_a_labels_only_csv_takes_the_view_from_the_file_name(tmp_path):
    """A CSV with Path and the 14 observations only (as a test set's labels may come) was refused for its
    missing Frontal/Lateral column; CheXpert's file names (view1_frontal.jpg) say the view."""
    columns = ["Path", *OBSERVATIONS]
    rows = [row(1), row(1, view="lateral", image=2), row(2, Cardiomegaly="1.0")]
    table = read_chexpert_csv(write_csv(tmp_path / "test.csv", rows, columns))
    assert table.frontal.tolist() == [True, False, True] and table.raw[2, CARDIO] == 1
    rows[1]["Path"] = rows[1]["Path"].replace("_lateral", "")
    with pytest.raises(ValueError) as err:
        read_chexpert_csv(write_csv(tmp_path / "bad.csv", rows, columns))
    assert str(err.value) == (f"{tmp_path / 'bad.csv'} row 3, column 'Path': '{rows[1]['Path']}' names no view "
                              "(<name>_frontal.jpg or _lateral.jpg) and the CSV has no 'Frontal/Lateral' column")


@pytest.mark.parametrize(
    ("bad", "column", "message"),
    [
        ({"Edema": "2"}, "Edema", "value '2' is not 1, 0, -1 or blank"),
        ({"Edema": "1.00000"}, "Edema", "value '1.00000' is not 1, 0, -1 or blank"),
        ({"Edema": "yes", "Cardiomegaly": "x"}, "Cardiomegaly", "value 'x' is not 1, 0, -1 or blank"),
        ({"Frontal/Lateral": "PA"}, "Frontal/Lateral", "value 'PA' is not Frontal or Lateral"),
    ],
)
def test_bad_value_names_row_and_column(tmp_path, bad, column, message):
    rows = [row(1), row(2), {**row(3), **bad}, {**row(4), "Edema": "7"}]
    csv_path = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(ValueError) as err:
        read_chexpert_csv(csv_path)
    assert str(err.value) == f"{csv_path} row 4, column {column!r}: {message}"


def test_field_count_duplicates_and_empty_files(tmp_path):
    csv_path = write_csv(tmp_path / "train.csv", [row(1), row(2)])
    csv_path.write_text(csv_path.read_text() + "a,b\n")
    with pytest.raises(ValueError, match=f"^{csv_path} row 4: 2 fields, but the header has 19$"):
        read_chexpert_csv(csv_path)
    write_csv(csv_path, [row(1), row(2), row(1)])
    with pytest.raises(ValueError, match=f"^{csv_path} row 4, column 'Path': '{PREFIX}/.*' duplicates row 2$"):
        read_chexpert_csv(csv_path)
    csv_path.write_text(",".join(CHEXPERT_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no data rows after the header"):
        read_chexpert_csv(csv_path)
    with pytest.raises(FileNotFoundError, match="nope.csv: CSV file not found"):
        read_chexpert_csv(tmp_path / "nope.csv")


def test_quoted_and_crlf_csv_parse_like_the_plain_one(tmp_path):
    rows = [row(1, Edema="-1.0", Cardiomegaly="1"), row(2, view="lateral", No_Finding="1.0"), row(3, Atelectasis=" 0.0 ")]
    plain = read_chexpert_csv(write_csv(tmp_path / "plain.csv", rows))
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("\r\n".join(",".join(f'"{c}"' for c in CHEXPERT_COLUMNS) if i == 0 else
                                  ",".join(f'"{r[c]}"' for c in CHEXPERT_COLUMNS)
                                  for i, r in enumerate([None] + rows)) + "\r\n\r\n")
    slow = read_chexpert_csv(quoted)
    assert slow.paths == plain.paths and slow.patients == plain.patients == ["patient00001", "patient00002", "patient00003"]
    np.testing.assert_array_equal(slow.raw, plain.raw)
    np.testing.assert_array_equal(slow.frontal, [True, False, True])
    assert plain.raw[0, EDEMA] == -1 and plain.raw[0, CARDIO] == 1 and plain.raw[2, ATEL] == 0
    assert np.isnan(plain.raw[0, NF]) and plain.raw[1, NF] == 1


# ---- output ----------------------------------------------------------------------------------


def test_written_datalist_matches_formats_and_loads(tmp_path):
    csv_path = make_dataset(tmp_path, [row(1, Cardiomegaly="1.0", Edema="-1.0"), row(2, No_Finding="1.0", Fracture="0.0")])
    result = build_datalist(tmp_path, csv_path, val_fraction=0.5, policy=LabelPolicy.build(uncertain_per="Edema=ones"))
    out = tmp_path / "out" / "datalist.json"
    result.write(out)
    loaded = load_classification_datalist(out)
    assert loaded == result.to_dict() == json.loads(out.read_text())
    assert list(loaded) == ["observations", "policy", "root", "training", "validation"]
    item = item_by_patient(loaded)["patient00001"]
    assert set(item) == {"image", "id", "patient", "label", "label_mask", "raw_label"}
    assert item["raw_label"][CARDIO] == 1 and item["raw_label"][EDEMA] == -1 and item["raw_label"][NF] is None
    assert item["label"][EDEMA] == 1.0 and item["label"][NF] == 0.0 and item["label_mask"][NF] == 1
    assert out.read_text().count("\n") == 2 + 5 + 2 * 2  # one item per line
    assert loaded["policy"]["uncertain"]["Edema"] == "ones" and loaded["policy"]["blank"]["Edema"] == "zeros"


def test_fast_writer_equals_json_dumps_on_random_labels(tmp_path):
    rng = np.random.default_rng(0)
    rows = [row(p, **{o.replace(" ", "_"): str(rng.choice(["1.0", "0.0", "-1.0", ""])) for o in OBSERVATIONS})
            for p in range(1, 301)]
    csv_path = make_dataset(tmp_path, rows, touch=False)
    policy = LabelPolicy.build(uncertain="ones", blank="ignore", uncertain_per="Edema=ignore")
    result = build_datalist(tmp_path, csv_path, check_files=False, policy=policy)
    result.write(tmp_path / "dl.json")
    expected = result.to_dict()
    lines = (tmp_path / "dl.json").read_text().splitlines()
    items = expected["training"] + expected["validation"]
    assert [line.strip().rstrip(",") for line in lines if line.strip().startswith('{"image"')] == [json.dumps(i) for i in items]


# ---- command line ----------------------------------------------------------------------------


def test_command_prints_summary_and_exit_codes(tmp_path, capsys):
    csv_path = make_dataset(tmp_path, [row(1, Atelectasis="-1.0"), row(2, Atelectasis="-1.0", Cardiomegaly="-1.0")])
    out = tmp_path / "datalist.json"
    argv = ["prepare-chexpert", "--root", str(tmp_path), "--csv", str(csv_path), "--out", str(out),
            "--uncertain", "ones", "--uncertain-per", "Cardiomegaly=zeros", "--val-fraction", "0.5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 images (frontal) from 2 patients: 1 training, 1 validation" in printed
    atel = next(line for line in printed.splitlines() if line.startswith("Atelectasis"))
    assert atel.split()[1:] == ["ones/zeros", "2", "0", "0", "2", "0"]
    cardio = next(line for line in printed.splitlines() if line.startswith("Cardiomegaly"))
    assert cardio.split()[1:] == ["zeros/zeros", "0", "2", "0", "1", "1"]
    assert load_classification_datalist(out)["policy"]["uncertain"]["Cardiomegaly"] == "zeros"

    (tmp_path / PREFIX / "train/patient00002/study1/view1_frontal.jpg").unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 2 images listed in ") and err.count("\n") == 1
    assert main(argv + ["--allow-missing"]) == 0
    assert "warning: skipped 1 missing images" in capsys.readouterr().out


@pytest.mark.parametrize("option, value, message", [
    ("--val-fraction", "1", "argument --val-fraction: '1' is not a fraction in [0, 1)"),
    ("--val-fraction", "-0.1", "argument --val-fraction: '-0.1' is not a fraction in [0, 1)"),
    ("--seed", "-1", "argument --seed: '-1' is not a whole number >= 0"),
])
def test_bad_split_options_are_usage_errors_naming_the_option(tmp_path, capsys, option, value, message):
    """Both failed only after the CSV was read (every image looked for): 'validation fraction must be in
    [0, 1), got 1.0' without the option, and numpy's 'expected non-negative integer' for the seed."""
    out = tmp_path / "datalist.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-chexpert", "--root", str(tmp_path), "--csv", "train.csv", "--out", str(out), option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_split_options_without_a_patient_split_are_refused_in_every_datalist_command(tmp_path, capsys):
    """--val-fraction and --seed were silently ignored where the validation list came from elsewhere
    (prepare-chexpert --valid-csv, prepare-mimic's official split, prepare-nih --validation test-list)."""
    from tests.data.test_mimic import make_mimic
    from tests.data.test_nih import make_nih

    csv_path = make_dataset(tmp_path, [row(1), row(2), row(9)])  # patient 9's image, listed by valid.csv below
    valid = write_csv(tmp_path / PREFIX / "valid.csv", [row(9)])
    write_csv(csv_path, [row(1), row(2)])
    out = tmp_path / "datalist.json"
    commands = {
        "--valid-csv": ["prepare-chexpert", "--root", str(tmp_path), "--csv", str(csv_path), "--valid-csv", str(valid)],
        "--split official (the default)": ["prepare-mimic", "--root", str(make_mimic(tmp_path / "mimic"))],
        "--validation test-list": ["prepare-nih", "--root", str(make_nih(tmp_path / "nih")), "--validation", "test-list"],
    }
    for instead, argv in commands.items():
        for extra, named in ((["--val-fraction", "0.3"], "--val-fraction"), (["--seed", "0"], "--seed"),
                             (["--val-fraction", "0.3", "--seed", "2"], "--val-fraction and --seed")):
            assert main([*argv, "--out", str(out), *extra]) == 2
            assert capsys.readouterr().err == (f"error: {named} only shape a patient split, and {instead} gives the "
                                               "validation list here\n")
            assert not out.exists()
        assert main([*argv, "--out", str(out)]) == 0  # without them, as before
        out.unlink()


def test_unusual_but_safe_paths_are_accepted(tmp_path):
    rows = [{**row(1), "Path": "CheXpert-v1.0-small/train/patient1/study1/view1..frontal:1.jpg"}, row(2)]
    table = read_chexpert_csv(write_csv(tmp_path / "train.csv", rows))
    assert table.patients == ["patient1", "patient00002"]


def test_non_ascii_paths_keep_their_text_and_errors_their_cell(tmp_path):
    rows = [{**row(1), "Path": "CheXpert-v1.0-small/train/pätient1/stüdy1/view1_frontal.jpg"}, row(2)]
    csv_path = write_csv(tmp_path / "train.csv", rows)
    assert read_chexpert_csv(csv_path).paths[0] == rows[0]["Path"]
    write_csv(csv_path, rows + [{**row(3), "Edema": "jä"}])
    with pytest.raises(ValueError, match=f"^{csv_path} row 4, column 'Edema': value 'jä' is not 1, 0, -1 or blank$"):
        read_chexpert_csv(csv_path)


def test_policy_must_cover_exactly_the_observations():
    with pytest.raises(ValueError, match=r"^blank policy must name exactly the 14 observations; missing \['Edema'\], unknown \['Oedema'\]$"):
        LabelPolicy(blank={**{o: "zeros" for o in OBSERVATIONS if o != "Edema"}, "Oedema": "zeros"})
