import json

import numpy as np
import pytest

from cxrdoll.cli import main
from cxrdoll.constants import LOCALISABLE_OBSERVATIONS, OBSERVATIONS
from cxrdoll.labels.quality import (
    hit, iou, paired_difference, peak_pixel, pixel_auroc, read_truth, resize_truth, summarise,
)
from cxrdoll.labels.writer import write_label

CARDIO = OBSERVATIONS.index("Cardiomegaly")
EDEMA = OBSERVATIONS.index("Edema")


def test_iou_hit_and_auroc_against_hand_computed_values():
    truth = np.zeros((4, 4), bool)
    truth[0:2, 0:2] = True  # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[1:3, 0:2] = True  # 4 pixels, 2 shared -> IoU 2 / 6
    assert iou(pred, truth) == pytest.approx(1 / 3)
    assert iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    soft = np.zeros((4, 4))
    soft[0, 1] = 0.9
    assert hit(soft, truth) == 1.0
    soft[3, 3] = 1.0
    assert hit(soft, truth) == 0.0
    assert hit(np.zeros((4, 4)), truth) == 0.0
    assert pixel_auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert pixel_auroc(np.full(4, 0.3), np.array([0, 1, 0, 1])) == pytest.approx(0.5)  # ties count half
    assert np.isnan(pixel_auroc(np.ones(3), np.ones(3)))


def test_flat_peak_resolves_to_the_tie_nearest_the_centroid():
    soft = np.zeros((5, 5))
    soft[1:4, 1:4] = 1.0
    assert peak_pixel(soft) == (2, 2)


def test_truth_is_area_resized_to_the_label_size():
    truth = np.zeros((1, 8, 8), np.uint8)
    truth[0, :4, :4] = 1
    truth[0, 4, 4] = 1  # a quarter of one 2x2 cell: below the 0.5 area threshold
    out = resize_truth(truth, 4)
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(out[0], expected)


def test_truth_at_a_non_square_image_resolution_is_read_and_squashed_like_the_image(tmp_path):
    """Images are resized to a square without keeping their aspect ratio; their truth goes the same way."""
    truth = np.zeros((14, 8, 12), np.uint8)
    truth[CARDIO, :4, :6] = 1  # the top-left quarter of a landscape image
    np.savez_compressed(tmp_path / "wide.npz", mask=truth)
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(resize_truth(read_truth(tmp_path / "wide.npz"), 4)[CARDIO], expected)
    np.savez_compressed(tmp_path / "bad.npz", mask=np.zeros((13, 8, 12), np.uint8))
    with pytest.raises(ValueError, match=r"bad.npz: truth mask must be \(14, H, W\), got \(13, 8, 12\)"):
        read_truth(tmp_path / "bad.npz")


def test_bootstrap_ci_contains_the_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    values = rng.uniform(size=(30, len(LOCALISABLE_OBSERVATIONS)))
    values[rng.uniform(size=values.shape) < 0.3] = np.nan
    values[:, 3] = np.nan  # an observation never evaluated
    a, b = summarise(values, 200, seed=7), summarise(values, 200, seed=7)
    assert a == b
    assert summarise(values, 200, seed=8) != a
    assert a["mean_ci"][0] <= a["mean"] <= a["mean_ci"][1]
    for j, obs in enumerate(LOCALISABLE_OBSERVATIONS):
        entry = a["per_observation"][obs]
        if j == 3:
            assert entry == {"value": None, "ci": [None, None], "n": 0}
            continue
        assert entry["value"] == pytest.approx(np.nanmean(values[:, j]))
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]


def _label(folder, item_id, cardio_mask, cardio_soft, edema_state=0, size=4):
    mask = np.zeros((14, size, size), np.uint8)
    soft = np.zeros((14, size, size), np.float32)
    state = np.full(14, -1, np.int8)
    state[CARDIO], state[EDEMA] = 1, edema_state
    mask[CARDIO], soft[CARDIO] = cardio_mask, cardio_soft
    write_label(folder / f"{item_id}.npz", mask, state, soft)


def test_paired_bootstrap_cancels_what_the_images_share():
    rng = np.random.default_rng(1)
    n, c = 40, len(LOCALISABLE_OBSERVATIONS)
    hardness = rng.uniform(0.0, 0.8, size=(n, 1))  # shared by both labellers: widens marginal CIs
    other = np.clip(hardness + rng.normal(0, 0.01, (n, c)), 0, 1)
    reference = np.clip(other + 0.02, 0, 1)
    other[:, 3] = np.nan  # an observation neither evaluated
    reference[:, 3] = np.nan
    paired = paired_difference(reference, other, n_boot=300, seed=0)
    assert paired["diff"] == pytest.approx(0.02, abs=2e-3)
    assert 0 < paired["ci"][0] <= paired["diff"] <= paired["ci"][1] and paired["ahead"] == 1.0
    marginal_ref, marginal_other = summarise(reference, 300, 0), summarise(other, 300, 0)
    assert marginal_ref["mean_ci"][0] < marginal_other["mean_ci"][1]  # the marginal CIs overlap
    assert paired_difference(reference, other, 300, 0) == paired  # deterministic for a seed
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(reference, other[:-1])


def test_label_quality_command_compares_labellings(tmp_path, capsys):
    truth_dir, good, bad = tmp_path / "truth", tmp_path / "good", tmp_path / "bad"
    # Truth at 8x8; labels at 4x4. Image "p1/a": cardio in the top-left 4x4 block (-> 2x2 at 4x4).
    truth = np.zeros((14, 8, 8), np.uint8)
    truth[CARDIO, :4, :4] = 1
    truth_dir.joinpath("p1").mkdir(parents=True)
    np.savez_compressed(truth_dir / "p1" / "a.npz", mask=truth)
    np.savez_compressed(truth_dir / "p2.npz", mask=np.zeros((14, 8, 8), np.uint8))  # no label in "bad": not common
    top_left = np.zeros((4, 4), np.uint8)
    top_left[:2, :2] = 1
    top_row = np.zeros((4, 4), np.uint8)
    top_row[0, :] = 1  # IoU with top_left: 2 / 6
    _label(good, "p1/a", top_left, top_left * 0.9)
    _label(good, "p2", top_left, top_left, edema_state=0)
    soft_bad = np.zeros((4, 4), np.float32)
    soft_bad[0, 3] = 1.0
    _label(bad, "p1/a", top_row, soft_bad)

    code = main(["label-quality", "--labels", f"doll={good}", str(bad), "--truth", str(truth_dir),
                 "--out", str(tmp_path / "q"), "--bootstrap", "50"])
    assert code == 0
    result = json.loads((tmp_path / "q" / "label_quality.json").read_text())
    assert result["images"] == 1 and result["truth_files"] == 2 and result["label_files"] == {"doll": 2, "bad": 1}
    doll, other = result["labellings"]["doll"], result["labellings"]["bad"]
    assert doll["iou"]["per_observation"]["Cardiomegaly"]["value"] == 1.0
    assert other["iou"]["per_observation"]["Cardiomegaly"]["value"] == pytest.approx(1 / 3)
    assert doll["hit"]["mean"] == 1.0 and other["hit"]["mean"] == 0.0
    assert doll["auroc"]["mean"] == 1.0
    # AUROC of soft_bad: one negative pixel scores above every positive, 11 negatives tie at 0 with 4 positives.
    assert other["auroc"]["mean"] == pytest.approx((4 * 11 * 0.5) / (4 * 12))
    assert doll["iou"]["per_observation"]["Edema"]["n"] == 0
    assert doll["iou"]["per_observation"]["Edema"]["value"] is None  # null, not NaN: the file is strict JSON
    assert "NaN" not in (tmp_path / "q" / "label_quality.json").read_text()
    report = (tmp_path / "q" / "label_quality.md").read_text()
    assert "1 images labelled by every labelling (of 2 truth files; label files: doll 2, bad 1)" in report
    assert "| doll | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] |" in report
    assert "| Cardiomegaly | 1 | 1.000 [1.000, 1.000] | 0.333 [0.333, 0.333] |" in report
    assert result["paired_iou"]["reference"] == "doll"
    assert result["paired_iou"]["others"]["bad"]["diff"] == pytest.approx(2 / 3)
    assert "| bad | 0.667 [0.667, 0.667] | 100% |" in report
    assert report in capsys.readouterr().out


def test_label_quality_command_errors(tmp_path, capsys):
    (tmp_path / "truth").mkdir()
    (tmp_path / "labels").mkdir()
    assert main(["label-quality", "--labels", str(tmp_path / "labels"), "--truth", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "q")]) == 2
    assert "missing: folder not found" in capsys.readouterr().err
    assert main(["label-quality", "--labels", f"a={tmp_path / 'labels'}", f"a={tmp_path / 'labels'}",
                 "--truth", str(tmp_path / "truth"), "--out", str(tmp_path / "q")]) == 2
    assert "the name 'a' is used twice" in capsys.readouterr().err


def test_label_with_wrong_channel_count_names_the_file(tmp_path, capsys):
    (tmp_path / "truth").mkdir()
    np.savez_compressed(tmp_path / "truth" / "a.npz", mask=np.ones((14, 8, 8), np.uint8))
    (tmp_path / "labels").mkdir()
    label = tmp_path / "labels" / "a.npz"
    np.savez_compressed(label, mask=np.ones((3, 4, 4), np.uint8), state=np.ones(14, np.int8))
    assert main(["label-quality", "--labels", str(tmp_path / "labels"), "--truth", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "q")]) == 2
    assert capsys.readouterr().err == f"error: {label}: mask must be (14, S, S), got (3, 4, 4)\n"
    assert not (tmp_path / "q").exists()
