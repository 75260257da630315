import json

import numpy as np
import pytest
import torch

from cxrdoll.labels.writer import (append_source, finalise, image_source, label_path, read_label, read_report,
                                   read_sources, record_code_version, sources_path, trim_torn_source, write_label,
                                   write_shard_record)


def _arrays(seed=0, size=6):
    rng = np.random.default_rng(seed)
    mask = (rng.uniform(size=(14, size, size)) > 0.5).astype(np.uint8)
    state = np.array([-1, 0, 1] + [-1] * 11, dtype=np.int8)
    soft = rng.uniform(size=(14, size, size)).astype(np.float32)
    return mask, state, soft


def test_label_file_round_trip_and_identical_bytes(tmp_path):
    mask, state, soft = _arrays()
    a, b = tmp_path / "a.npz", tmp_path / "sub" / "b.npz"
    write_label(a, mask, state, soft)
    write_label(b, mask, state, soft)
    assert a.read_bytes() == b.read_bytes()  # no timestamps: equal arrays give equal files
    data = read_label(a)
    np.testing.assert_array_equal(data["mask"], mask)
    np.testing.assert_array_equal(data["state"], state)
    assert data["soft"].dtype == np.float16
    np.testing.assert_allclose(data["soft"], soft, atol=1e-3)
    write_label(a, mask, state)
    assert set(read_label(a)) == {"mask", "state"}  # soft maps are optional


def test_soft_maps_are_stored_within_0_and_1(tmp_path):
    """docs/FORMATS.md promises soft maps in [0, 1]; an attribution that overshoots must not leave it."""
    mask, state, soft = _arrays()
    soft[0, 0, :3] = [-0.25, 1.5, 0.5]
    write_label(tmp_path / "s.npz", mask, state, soft)
    np.testing.assert_array_equal(read_label(tmp_path / "s.npz")["soft"][0, 0, :3], [0.0, 1.0, 0.5])


def test_label_file_checks(tmp_path):
    mask, state, soft = _arrays()
    with pytest.raises(ValueError, match=r"x.npz: mask must be \(14, S, S\)"):
        write_label(tmp_path / "x.npz", mask[:3], state)
    with pytest.raises(ValueError, match="soft .* must match mask"):
        write_label(tmp_path / "x.npz", mask, state, soft[:, :2])
    with pytest.raises(ValueError, match=r"x.npz: mask must be \(14, S, S\), got \(14, 6, 5\)"):
        write_label(tmp_path / "x.npz", mask[:, :, :5], state)  # pre-training takes square labels only
    with pytest.raises(ValueError, match=r"x.npz: state must be \(14,\), got \(13,\)"):
        write_label(tmp_path / "x.npz", mask, state[:13])  # one channel short would shift every observation
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(FileNotFoundError, match=r"missing.npz: label file not found"):
        read_label(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad.npz: not a readable label file \(not an .npz archive\)") as err:
        read_label(tmp_path / "bad.npz")
    assert "unsafely" not in str(err.value)  # numpy's advice for a file it takes for a pickle


def test_label_writing_takes_tensors_and_refuses_what_it_would_write_wrong(tmp_path):
    """binarise gives torch tensors, which failed with "'Tensor' object has no attribute 'astype'"; a soft
    mask was truncated to an empty target (0.7 -> 0), an int mask of 256 wrapped to 0, and a state of 2
    was written, to be refused only when pre-training read it."""
    mask, state, soft = _arrays()
    write_label(tmp_path / "t.npz", torch.from_numpy(mask).bool(), torch.from_numpy(state), torch.from_numpy(soft))
    np.testing.assert_array_equal(read_label(tmp_path / "t.npz")["mask"], mask)
    with pytest.raises(ValueError, match=r"x.npz: mask holds values other than 0 and 1 \(float32\); binarise soft maps first"):
        write_label(tmp_path / "x.npz", mask * np.float32(0.7), state)
    write_label(tmp_path / "w.npz", mask.astype(np.int32) * 256, state)
    np.testing.assert_array_equal(read_label(tmp_path / "w.npz")["mask"], mask)
    bad = state.copy()
    bad[3] = 2
    with pytest.raises(ValueError, match=r"x.npz: 'state' must be 14 values of -1/0/1"):
        write_label(tmp_path / "x.npz", mask, bad)
    assert not (tmp_path / "x.npz").exists()


def test_label_path_keeps_ids_inside_the_folder(tmp_path):
    assert label_path(tmp_path, "CheXpert/train/p1/s1/view1.jpg") == tmp_path / "CheXpert/train/p1/s1/view1.npz"
    assert label_path(tmp_path, "scan.NII.GZ") == tmp_path / "scan.npz"
    assert label_path(tmp_path, "p1/.png") == tmp_path / "p1/.png.npz"  # never a name of its own extension only
    assert label_path(tmp_path, ".png") == tmp_path / ".png.npz"  # nor '.npz' at the top of the folder
    for bad in ("../x.jpg", "/abs/x.jpg", ""):
        with pytest.raises(ValueError, match="is not a relative path inside the output folder"):
            label_path(tmp_path, bad)


def test_only_an_image_extension_leaves_an_id_for_its_label_name(tmp_path):
    """ingest-dicom's ids of files named by UID, without extension, differ in their last number: as an
    extension it was dropped, and the labeller refused the datalist (one label file for the series)."""
    series = ["1.2.840.113619.2.55.3.1268071029.320", "1.2.840.113619.2.55.3.1268071029.321"]
    assert [label_path(tmp_path, i).name for i in series] == [f"{i}.npz" for i in series]
    assert label_path(tmp_path, "scan.v2").name == "scan.v2.npz"
    assert label_path(tmp_path, "scan.v2.dcm").name == "scan.v2.npz"


def test_finalise_waits_for_every_shard_and_merges_reports(tmp_path):
    mask, state, soft = _arrays()
    items = [{"image": f"/img/{i}.png", "id": f"p{i}/v.png"} for i in range(3)]
    write_label(label_path(tmp_path, items[0]["id"]), mask, state, soft)
    write_label(label_path(tmp_path, items[2]["id"]), mask, state, soft)
    write_shard_record(tmp_path, 1, 2, [{"id": "p1/v.png", "image": "/img/1.png", "reason": "OSError: truncated"}])
    assert not finalise(tmp_path, {"training": items[:2], "validation": items[2:]}, 2, {"explainer": "x"})
    assert not (tmp_path / "datalist.json").exists()
    write_shard_record(tmp_path, 0, 2, [])
    assert finalise(tmp_path, {"training": items[:2], "validation": items[2:]}, 2, {"explainer": "x"})
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert [d["id"] for d in datalist["training"]] == ["p0/v.png"]
    assert datalist["validation"][0]["label"] == str((tmp_path / "p2/v.npz").resolve())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"]["labelled"] == 2 and manifest["counts"]["skipped"] == 1
    assert manifest["counts"]["positives"]["Cardiomegaly"] == 2
    assert manifest["counts"]["negatives"]["Enlarged Cardiomediastinum"] == 2
    # state -1 (ignored by the loss) is neither a positive nor a negative
    assert manifest["counts"]["positives"]["No Finding"] == manifest["counts"]["negatives"]["No Finding"] == 0
    assert manifest["explainer"] == "x" and manifest["code_version"]["cxrdoll"]
    assert read_report(tmp_path / "report.csv") == [{"id": "p1/v.png", "image": "/img/1.png", "reason": "OSError: truncated"}]


def test_finalise_reports_only_skips_of_images_the_datalist_still_lists(tmp_path):
    """A shard record can hold a skip of an image since left out of the datalist (a re-run on a
    smaller list): counted, the manifest would say more images were handled than it lists."""
    mask, state, soft = _arrays()
    items = [{"image": "/img/0.png", "id": "p0/v.png"}, {"image": "/img/1.png", "id": "p1/v.png"}]
    write_label(label_path(tmp_path, items[0]["id"]), mask, state, soft)
    write_shard_record(tmp_path, 0, 1, [{"id": "gone/v.png", "image": "/img/gone.png", "reason": "OSError: gone"},
                                        {"id": "p1/v.png", "image": "/img/1.png", "reason": "OSError: truncated"}])
    assert finalise(tmp_path, {"training": items}, 1, {"explainer": "x"})
    counts = json.loads((tmp_path / "manifest.json").read_text())["counts"]
    assert (counts["images"], counts["labelled"], counts["skipped"]) == (2, 1, 1)
    assert [row["id"] for row in read_report(tmp_path / "report.csv")] == ["p1/v.png"]


def test_the_report_is_the_same_whichever_rank_skipped_which_image(tmp_path):
    """Two shards must give the files one run gives: skip rows merged from rank records in rank
    order would list the images in another order than one rank that met them in datalist order."""
    items = [{"image": f"/img/{i}.png", "id": f"p{i}/v.png"} for i in range(2)]
    rows = [{"id": it["id"], "image": it["image"], "reason": "OSError: truncated"} for it in items]
    one, two = tmp_path / "one", tmp_path / "two"
    write_shard_record(one, 0, 1, rows)
    write_shard_record(two, 0, 2, rows[1:])
    write_shard_record(two, 1, 2, rows[:1])
    for out, world_size in ((one, 1), (two, 2)):
        assert finalise(out, {"training": items}, world_size, {"explainer": "x"})
    assert (two / "report.csv").read_bytes() == (one / "report.csv").read_bytes()
    assert [row["id"] for row in read_report(two / "report.csv")] == ["p0/v.png", "p1/v.png"]


def test_a_relative_output_folder_still_gives_absolute_label_paths(tmp_path, monkeypatch):
    """The datalist's label paths are absolute (docs/FORMATS.md): pre-training reads it from another folder."""
    mask, state, soft = _arrays()
    monkeypatch.chdir(tmp_path)
    items = [{"image": "/img/0.png", "id": "p0/v.png"}]
    write_label(label_path("labels", items[0]["id"]), mask, state)
    write_shard_record("labels", 0, 1, [])
    assert finalise("labels", {"training": items}, 1, {"explainer": "x"})
    datalist = json.loads((tmp_path / "labels" / "datalist.json").read_text())
    assert datalist["training"][0]["label"] == str((tmp_path / "labels" / "p0" / "v.npz").resolve())


def test_the_manifest_lists_code_versions_in_a_fixed_order(tmp_path, monkeypatch):
    """Records are read by globbing, whose order is the disk's: unsorted, two ranks finalising
    together could write different manifests."""
    for commit in "cadbe":
        monkeypatch.setattr("cxrdoll.labels.writer.code_version", lambda c=commit: {"cxrdoll": "0.1.0", "git_commit": c * 40})
        record_code_version(tmp_path)
    write_shard_record(tmp_path, 0, 1, [])
    assert finalise(tmp_path, {"training": []}, 1, {"explainer": "x"})
    versions = json.loads((tmp_path / "manifest.json").read_text())["label_code_versions"]
    assert [v["git_commit"] for v in versions] == [c * 40 for c in "abcde"]


def test_finalise_names_a_damaged_label_file_and_the_way_out(tmp_path):
    mask, state, soft = _arrays()
    items = [{"image": "/img/0.png", "id": "p0/v.png"}]
    path = label_path(tmp_path, items[0]["id"])
    write_label(path, mask, state, soft)
    path.write_bytes(path.read_bytes()[:40])  # damaged after the run wrote it
    write_shard_record(tmp_path, 0, 1, [])
    with pytest.raises(ValueError, match=r"v\.npz: not a readable label file .*delete it and re-run the labeller"):
        finalise(tmp_path, {"training": items}, 1, {"explainer": "x"})
    assert not (tmp_path / "datalist.json").exists()


def test_source_logs_keep_each_ids_latest_record_and_wait_for_a_torn_last_line(tmp_path):
    old, new = tmp_path / "old.png", tmp_path / "new.png"
    old.write_bytes(b"a")
    new.write_bytes(b"bb")
    of_one, of_two = sources_path(tmp_path, 0, 1), sources_path(tmp_path, 1, 2)
    append_source(of_two, "x", image_source(old))
    append_source(of_two, "y", image_source(old))
    append_source(of_one, "x", image_source(new))  # later: wins, though its log is read first
    with open(of_one, "ab") as fh:
        fh.write(b'{"id": "y", "ima')  # cut short by a kill (or still being written by its rank)
    assert {i: r["image"] for i, r in read_sources(tmp_path).items()} == {"x": str(new), "y": str(old)}

    trim_torn_source(of_one)  # the rank itself, before it appends again
    append_source(of_one, "y", image_source(new))
    record = read_sources(tmp_path)["y"]
    assert record == {"id": "y", "image": str(new), "size": 2, "mtime_ns": new.stat().st_mtime_ns,
                      "recorded_ns": record["recorded_ns"]}
    assert of_one.read_bytes().count(b"\n") == 2

    of_two.write_bytes(of_two.read_bytes() + b"garbage\n")
    with pytest.raises(ValueError, match=r"sources-rank0001-of-0002.jsonl:3: not a source record; delete this file"):
        read_sources(tmp_path)
