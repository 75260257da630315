import json

import numpy as np
import pytest

from cxrdoll.cli import main
from cxrdoll.constants import LOCALISABLE_OBSERVATIONS, OBSERVATIONS
from cxrdoll.labels.quality import (
    evaluate, hit, iou, markdown_report, paired_difference, peak_pixel, pixel_auroc, read_truth, score_labelling,
    summarise, to_truth_size,
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
    corner = np.zeros((4, 4), bool)
    corner[0, 3] = True
    soft[0, 3] = 2.0
    assert hit(soft, corner) == 1.0 and hit(soft, corner.T) == 0.0  # the peak is (row 0, column 3)
    assert pixel_auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert pixel_auroc(np.full(4, 0.3), np.array([0, 1, 0, 1])) == pytest.approx(0.5)  # ties count half
    assert np.isnan(pixel_auroc(np.ones(3), np.ones(3)))


def test_counted_pixel_auroc_matches_ranks_also_on_the_tails_of_soft_maps():
    """Against scipy's ranks, on maps with many zeros, ties and values far below 1/65535 (the smooth
    tails of blurred, normalised maps, where a 16-bit grid merged distinct scores)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    for k in range(20):
        soft = (rng.uniform(size=(48, 40)) ** 8 * (1e-3 if k % 2 else 1.0)).astype(np.float32)
        soft[rng.uniform(size=soft.shape) < 0.3] = 0.0  # the many zeros of a normalised map tie
        truth = rng.uniform(size=soft.shape) < 0.2 + 0.5 * (soft > np.median(soft))
        ranks = rankdata(soft.ravel())
        n_pos, n_neg = truth.sum(), truth.size - truth.sum()
        expected = (ranks[truth.ravel()].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        assert pixel_auroc(soft, truth) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        pixel_auroc(np.array([0.1, np.nan]), np.array([0, 1]))


def test_flat_peak_resolves_to_the_tie_nearest_the_centroid():
    soft = np.zeros((5, 5))
    soft[1:4, 1:4] = 1.0
    assert peak_pixel(soft) == (2, 2)


def test_a_label_at_another_size_than_its_truth_is_refused_by_every_score():
    """A 64 px label against a 256 px truth scored silently: pixel_auroc ranked a prefix of the truth,
    hit looked up the peak's coordinates in another place, iou broadcast a (1, W) mask."""
    rng = np.random.default_rng(0)
    soft, truth = rng.random((64, 64)), np.zeros((256, 256), bool)
    truth[100:150, 100:150] = True
    for score, label, what in ((pixel_auroc, soft, "soft map"), (hit, soft, "soft map"), (iou, soft > 0.5, "mask")):
        with pytest.raises(ValueError, match=rf"{what} \(64, 64\) and truth \(256, 256\) differ in shape; .*to_truth_size"):
            score(label, truth)
    with pytest.raises(ValueError, match=r"mask \(1, 64\) and truth \(64, 64\) differ in shape"):
        iou(soft[:1] > 0.5, truth[:64, :64])
    big_mask, big_soft = to_truth_size((soft > 0.5)[None], soft[None], truth.shape)
    assert 0 <= pixel_auroc(big_soft[0], truth) <= 1 and hit(big_soft[0], truth) in (0.0, 1.0)


def test_labels_are_enlarged_to_the_truth_resolution():
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, :2, :2] = 1
    soft = np.zeros((1, 4, 4), np.float32)
    soft[0, 0, 0] = 1.0
    big_mask, big_soft = to_truth_size(mask, soft, (8, 8))
    expected = np.zeros((8, 8), bool)
    expected[:4, :4] = True  # each label pixel covers exactly 2x2 truth pixels
    np.testing.assert_array_equal(big_mask[0], expected)
    # bilinear, half-pixel centres: the corner pixel keeps its value, its neighbour is 3/4 of it
    assert big_soft[0, 0, 0] == pytest.approx(1.0) and big_soft[0, 0, 1] == pytest.approx(0.75)
    assert to_truth_size(mask, None, (4, 4))[1] is None


def test_a_label_is_enlarged_by_a_non_integer_factor_around_pixel_centres():
    """4 -> 6 columns: truth column x takes label column floor((x + 0.5) * 4 / 6), i.e. 0 1 1 2 3 3
    (plain 'nearest', floor(x * 4 / 6) = 0 0 1 2 2 3, shifts the label half a pixel left)."""
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, :, 1] = 1
    big_mask, _ = to_truth_size(mask, None, (4, 6))
    np.testing.assert_array_equal(big_mask[0], np.tile([False, True, True, False, False, False], (4, 1)))


def test_a_label_is_scored_at_a_non_square_truth_like_the_image_it_was_squashed_from(tmp_path):
    """Images are resized to a square without keeping their aspect ratio; labels go back the same way."""
    truth = np.zeros((14, 8, 12), np.uint8)
    truth[CARDIO, :4, :6] = 1  # the top-left quarter of a landscape image
    np.savez_compressed(tmp_path / "truth.npz", mask=truth)
    top_left = np.zeros((4, 4), np.uint8)
    top_left[:2, :2] = 1
    _label(tmp_path / "labels", "truth", top_left, top_left * 0.9)
    scores = score_labelling({"truth": tmp_path / "labels" / "truth.npz"}, {"truth": tmp_path / "truth.npz"}, ["truth"])
    j = LOCALISABLE_OBSERVATIONS.index("Cardiomegaly")
    assert scores.values["iou"][0, j] == 1.0 and scores.values["hit"][0, j] == 1.0
    np.savez_compressed(tmp_path / "bad.npz", mask=np.zeros((13, 8, 12), np.uint8))
    with pytest.raises(ValueError, match=r"bad.npz: truth mask must be \(14, H, W\), got \(13, 8, 12\)"):
        read_truth(tmp_path / "bad.npz")


def test_only_targeted_true_positives_are_scored_and_targets_on_empty_truth_are_false_positives(tmp_path):
    """cheXlocalize's protocol: ignored (-1) and negative (0) channels are never scored, even where the
    truth has the finding; a target whose truth is empty is a false positive, not a score of 0."""
    atel = OBSERVATIONS.index("Atelectasis")
    truth = np.zeros((14, 4, 4), np.uint8)
    truth[CARDIO, :2, :2] = 1
    truth[EDEMA, 2:, 2:] = 1
    np.savez_compressed(tmp_path / "t.npz", mask=truth)
    mask = np.zeros((14, 4, 4), np.uint8)
    mask[atel, 1:3, 1:3] = 1
    state = np.full(14, -1, np.int8)
    state[EDEMA], state[atel] = 0, 1  # Cardiomegaly stays -1 (uncertain: ignored)
    write_label(tmp_path / "l.npz", mask, state, mask.astype(np.float32))
    scores = score_labelling({"x": tmp_path / "l.npz"}, {"x": tmp_path / "t.npz"}, ["x"])
    c, e, a = (LOCALISABLE_OBSERVATIONS.index(o) for o in ("Cardiomegaly", "Edema", "Atelectasis"))
    assert scores.truth_positive[[c, e, a]].tolist() == [1, 1, 0]
    assert scores.false_positive[[c, e, a]].tolist() == [0, 0, 1] and scores.false_positive.sum() == 1
    for metric in ("iou", "hit", "auroc"):
        assert np.isnan(scores.values[metric]).all(), metric


def test_a_finding_thinner_than_a_label_pixel_is_scored_not_called_a_false_positive(tmp_path):
    """A 2-px fracture line in a 64-px truth, labelled at 16 px (4 truth px per label px)."""
    truth = np.zeros((14, 64, 64), np.uint8)
    fracture = OBSERVATIONS.index("Fracture")
    truth[fracture, 10:50, 29:31] = 1  # the middle of label column 7 (truth columns 28-31)
    np.savez_compressed(tmp_path / "t.npz", mask=truth)
    mask = np.zeros((14, 16, 16), np.uint8)
    mask[fracture, 2:13, 7:8] = 1  # the label column over the line
    state = np.full(14, -1, np.int8)
    state[fracture] = 1
    soft = mask.astype(np.float32)
    write_label(tmp_path / "l.npz", mask, state, soft)
    scores = score_labelling({"x": tmp_path / "l.npz"}, {"x": tmp_path / "t.npz"}, ["x"])
    j = LOCALISABLE_OBSERVATIONS.index("Fracture")
    assert scores.truth_positive[j] == 1 and scores.false_positive[j] == 0
    assert scores.values["iou"][0, j] == pytest.approx(80 / (44 * 4))  # 80 truth px inside 44x4 labelled px
    assert scores.values["hit"][0, j] == 1.0 and scores.values["auroc"][0, j] > 0.95


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


def test_bootstrap_cis_are_the_2_5_and_97_5_percentiles():
    """Bootstrap means of the scores [0, 0, 1] are k / 3 with k ~ Binomial(3, 1/3): P(1) = 1/27 = 3.7 %
    (above 2.5 %, below 5 %) and P(0) = 8/27 = 30 %, so the 95 % CI is [0, 1], and a 90 % one [0, 2/3]."""
    values = np.full((3, len(LOCALISABLE_OBSERVATIONS)), np.nan)
    values[:, 0] = [0.0, 0.0, 1.0]
    result = summarise(values, 1000, seed=0)
    assert result["per_observation"][LOCALISABLE_OBSERVATIONS[0]]["ci"] == [0.0, 1.0]
    assert result["mean_ci"] == [0.0, 1.0]  # one observation: the mean is its mean
    paired = paired_difference(values, np.where(np.isnan(values), np.nan, 0.0), 1000, seed=0)
    assert paired["diff"] == pytest.approx(1 / 3) and paired["ci"] == [0.0, 1.0]


def test_paired_bootstrap_cancels_what_the_images_share():
    rng = np.random.default_rng(1)
    n, c = 40, len(LOCALISABLE_OBSERVATIONS)
    hardness = rng.uniform(0.0, 0.8, size=(n, 1))  # shared by both labellers: widens marginal CIs
    other = np.clip(hardness + rng.normal(0, 0.01, (n, c)), 0, 1)
    reference = np.clip(other + 0.02, 0, 1)
    other[:, 3] = np.nan  # an observation neither evaluated
    reference[:, 3] = np.nan
    paired = paired_difference(reference, other, n_boot=300, seed=0)
    assert paired["cells"] == n * (c - 1)  # (image, observation) cells, not images
    assert paired["diff"] == pytest.approx(0.02, abs=2e-3)
    assert 0 < paired["ci"][0] <= paired["diff"] <= paired["ci"][1] and paired["ahead"] == 1.0
    marginal_ref, marginal_other = summarise(reference, 300, 0), summarise(other, 300, 0)
    assert marginal_ref["mean_ci"][0] < marginal_other["mean_ci"][1]  # the marginal CIs overlap
    assert paired_difference(reference, other, 300, 0) == paired  # deterministic for a seed
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(reference, other[:-1])


def test_the_ci_of_the_mean_averages_the_same_observations_as_the_estimate():
    """A rare observation (one image, IoU 0) is missing from about a third of the resamples; those
    would average only the common observations (IoU 0.6) and sit outside the estimate's own CI."""
    values = np.full((50, len(LOCALISABLE_OBSERVATIONS)), np.nan)
    values[:, :12] = 0.6 + np.linspace(-0.01, 0.01, 50)[:, None]
    values[0, 12] = 0.0
    result = summarise(values, 1000, seed=0)
    assert result["mean"] == pytest.approx(0.6 * 12 / 13)
    assert result["mean_ci"][1] < 0.57  # the mixture's upper end was 0.60
    assert 550 < result["mean_resamples"] < 750  # the resamples that drew image 0
    assert result["per_observation"][LOCALISABLE_OBSERVATIONS[12]] == {"value": 0.0, "ci": [None, None], "n": 1}


def test_rare_observations_give_no_ci_rather_than_one_from_a_few_resamples_or_a_crash():
    values = np.full((40, len(LOCALISABLE_OBSERVATIONS)), np.nan)
    values[:, 0] = np.linspace(0.2, 0.8, 40)
    values[[0, 1], 1] = [0.1, 0.3]  # a two-image observation
    seed = next(s for s in range(100) if not {0, 1} & set(np.random.default_rng(s).integers(0, 40, size=40)))
    rare = summarise(values, n_boot=1, seed=seed)["per_observation"][LOCALISABLE_OBSERVATIONS[1]]
    assert rare == {"value": pytest.approx(0.2), "ci": [None, None], "n": 2}  # its one resample missed both images
    for j in range(2, 13):  # eleven single-image observations: few resamples keep them all
        values[j, j] = 0.5
    crowded = summarise(values, 1000, seed=0)
    assert crowded["mean_resamples"] < 500 and np.isnan(crowded["mean_ci"][0]) and np.isnan(crowded["mean_ci"][1])
    paired = paired_difference(values, values * 0.9, 1000, seed=0)  # the same rule for the paired difference
    assert paired["resamples"] < 500 and np.isnan(paired["ci"][0]) and np.isnan(paired["ahead"])


def test_the_paired_bootstrap_compares_only_the_images_both_scored():
    """Same scores on the shared images; the reference alone also scored one hard image."""
    rng = np.random.default_rng(0)
    other = np.full((20, len(LOCALISABLE_OBSERVATIONS)), np.nan)
    other[1:, 0] = rng.uniform(0.4, 0.6, 19)
    reference = other.copy()
    reference[0, 0] = 0.0  # e.g. an image only the ensemble predicted positive
    paired = paired_difference(reference, other, n_boot=200, seed=0)
    assert paired["diff"] == 0.0 and paired["ci"] == [0.0, 0.0] and paired["cells"] == 19
    assert paired["resamples"] == 200


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
    # AUROC of soft_bad at 8x8: its one hot pixel spreads bilinearly over 3x3 negative pixels (columns
    # 5-7, rows 0-2); the 16 positives tie at 0 with the other 39 negatives.
    assert other["auroc"]["mean"] == pytest.approx((16 * 39 * 0.5) / (16 * 48))
    assert doll["iou"]["per_observation"]["Edema"]["n"] == 0
    assert doll["iou"]["per_observation"]["Edema"]["value"] is None  # null, not NaN: the file is strict JSON
    assert "NaN" not in (tmp_path / "q" / "label_quality.json").read_text()
    report = (tmp_path / "q" / "label_quality.md").read_text()
    assert "1 images labelled by every labelling (of 2 truth files; label files: doll 2, bad 1)" in report
    assert "| doll | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] | 0 of 1 |" in report
    assert "| Cardiomegaly | 1 | 1.000 | 0.333 |" in report  # one image: no CI
    assert result["paired_iou"]["reference"] == "doll"
    assert result["paired_iou"]["others"]["bad"]["diff"] == pytest.approx(2 / 3)
    assert "| bad | 0.667 [0.667, 0.667] | 100% |" in report
    assert report in capsys.readouterr().out


def test_empty_soft_maps_are_counted_among_the_scored_maps(tmp_path, capsys):
    """A soft map without a positive pixel scores a hit of 0 (it points nowhere); the count of such maps
    tells a reader why a labelling's hit rate is low (Grad-CAM's ReLU empties whole maps)."""
    (tmp_path / "truth").mkdir()
    (tmp_path / "labels").mkdir()
    truth = np.zeros((14, 4, 4), np.uint8)
    truth[CARDIO, :2, :2] = truth[EDEMA, 2:, 2:] = 1
    np.savez_compressed(tmp_path / "truth" / "x.npz", mask=truth)
    soft = truth.astype(np.float32)
    soft[EDEMA] = 0.0  # targeted, and the truth has it, but the map is empty
    state = np.zeros(14, np.int8)
    state[CARDIO] = state[EDEMA] = 1
    write_label(tmp_path / "labels" / "x.npz", truth, state, soft)
    scores = score_labelling({"x": tmp_path / "labels" / "x.npz"}, {"x": tmp_path / "truth" / "x.npz"}, ["x"])
    c, e = (LOCALISABLE_OBSERVATIONS.index(o) for o in ("Cardiomegaly", "Edema"))
    assert scores.empty_soft[[c, e]].tolist() == [0, 1] and scores.empty_soft.sum() == 1
    assert scores.values["hit"][0, [c, e]].tolist() == [1.0, 0.0]
    result = evaluate({"a": tmp_path / "labels"}, tmp_path / "truth", n_boot=10)
    assert result["labellings"]["a"]["empty_soft_maps"]["Edema"] == 1
    assert evaluate({"a": tmp_path / "labels", "b": tmp_path / "labels"}, tmp_path / "truth", n_boot=10,
                    progress=True)["labellings"]["b"] == result["labellings"]["a"]
    bars = capsys.readouterr().err  # a full-resolution image takes seconds: one bar per labelling
    assert "label-quality a: 100%" in bars and "label-quality b: 100%" in bars and "1/1" in bars
    assert "| a | 1.000 [1.000, 1.000] | 0.500 [0.500, 0.500] | 0.750 [0.750, 0.750] | 1 of 2 |" in markdown_report(result)


def test_label_quality_command_errors(tmp_path, capsys):
    (tmp_path / "truth").mkdir()
    (tmp_path / "labels").mkdir()
    assert main(["label-quality", "--labels", str(tmp_path / "labels"), "--truth", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "q")]) == 2
    assert "missing: folder not found" in capsys.readouterr().err
    assert main(["label-quality", "--labels", f"a={tmp_path / 'labels'}", f"a={tmp_path / 'labels'}",
                 "--truth", str(tmp_path / "truth"), "--out", str(tmp_path / "q")]) == 2
    assert "the name 'a' is used twice" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--bootstrap", "-1"), ("--seed", "-1"), ("--bootstrap", "1e3")])
def test_negative_bootstrap_or_seed_is_a_usage_error(tmp_path, capsys, option, value):
    """--bootstrap -1 was taken as 0 and reported as '95 % CIs from -1 bootstrap resamples'; --seed -1 failed in
    numpy after every label file was scored, without naming the option."""
    with pytest.raises(SystemExit) as exit_info:
        main(["label-quality", "--labels", str(tmp_path / "labels"), "--truth", str(tmp_path / "truth"),
              "--out", str(tmp_path / "q"), option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: {value!r} is not a whole number >= 0" in capsys.readouterr().err


def test_repeated_labels_options_add_up(tmp_path):
    """'--labels doll=A --labels gradcam=B' kept only gradcam, and the report silently lacked doll's column."""
    from cxrdoll.cli import build_parser

    args = build_parser("label-quality").parse_args(
        ["label-quality", "--labels", "doll=A", "--labels", "gradcam=B", "ig=C", "--truth", "T", "--out", "O"])
    assert args.labels == ["doll=A", "gradcam=B", "ig=C"]


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


def test_ids_starting_with_a_dot_are_scored_and_bookkeeping_is_not(tmp_path, capsys):
    truth_dir, labels = tmp_path / "truth", tmp_path / "labels"
    truth = np.zeros((14, 4, 4), np.uint8)
    truth[CARDIO, :2, :2] = 1
    for item_id in (".p1/a", "p2/.b"):
        (truth_dir / item_id).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(truth_dir / f"{item_id}.npz", mask=truth)
        _label(labels, item_id, truth[CARDIO], truth[CARDIO] * 0.9)
    # not labels: the labeller's shards, a killed atomic write's temporary, a macOS resource fork
    (labels / ".shards").mkdir()
    for junk in (".shards/rank0.npz", "p2/.a.npz.k3j9x2ab.tmp.npz", "p2/._a.npz"):
        (labels / junk).write_bytes(b"not an npz")
    code = main(["label-quality", "--labels", f"doll|v2={labels}", "--truth", str(truth_dir),
                 "--out", str(tmp_path / "q"), "--bootstrap", "0"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "q" / "label_quality.json").read_text())
    assert result["images"] == 2 and result["label_files"] == {"doll|v2": 2}
    report = (tmp_path / "q" / "label_quality.md").read_text()
    assert "| doll\\|v2 | 1.000 | 1.000 | 1.000 |" in report  # one cell, not two
    assert "| observation | n | doll\\|v2 |" in report


def _fracture_case(tmp_path, annotated):
    """A truth without a fracture and a label that targets one (with a mask), scored on one image."""
    truth = np.zeros((14, 4, 4), np.uint8)
    truth[CARDIO, :2, :2] = 1
    arrays = {"mask": truth} if annotated is None else {"mask": truth, "annotated": annotated}
    np.savez_compressed(tmp_path / "t.npz", **arrays)
    fracture = OBSERVATIONS.index("Fracture")
    mask = np.zeros((14, 4, 4), np.uint8)
    mask[CARDIO, :2, :2] = mask[fracture, 3, :] = 1
    state = np.zeros(14, np.int8)
    state[CARDIO] = state[fracture] = 1
    write_label(tmp_path / "l.npz", mask, state, mask.astype(np.float32))
    return score_labelling({"x": tmp_path / "l.npz"}, {"x": tmp_path / "t.npz"}, ["x"])


def test_a_target_where_the_truth_is_unannotated_is_neither_scored_nor_a_false_positive(tmp_path):
    """CheXlocalize outlines 10 observations: its empty Fracture channel is unknown, and a fracture label
    there is not wrong; where the truth annotates Fracture (the synthetic truth), the same label is."""
    f, c = LOCALISABLE_OBSERVATIONS.index("Fracture"), LOCALISABLE_OBSERVATIONS.index("Cardiomegaly")
    chexlocalize = np.ones(14, bool)
    chexlocalize[[OBSERVATIONS.index(o) for o in ("No Finding", "Pneumonia", "Pleural Other", "Fracture")]] = False
    for annotated in (chexlocalize, chexlocalize.astype(np.uint8)):
        unknown = _fracture_case(tmp_path, annotated)
        assert unknown.false_positive.sum() == 0 and unknown.truth_positive.tolist() == [int(j == c) for j in range(13)]
        assert unknown.annotated[f] == 0 and unknown.annotated.sum() == 10
        assert np.isnan(unknown.values["iou"][0, f]) and unknown.values["iou"][0, c] == 1.0
    known = _fracture_case(tmp_path, None)  # no 'annotated': every channel is
    assert known.false_positive[f] == 1 and known.false_positive.sum() == 1 and known.annotated.tolist() == [1] * 13
    assert np.isnan(known.values["iou"][0, f]) and known.values["iou"][0, c] == 1.0


@pytest.mark.parametrize("annotated, message", [
    (np.ones(13, bool), r"truth 'annotated' must be 14 bool or 0/1 uint8 values, got bool \(13,\)"),
    (np.ones(14, np.float32), r"truth 'annotated' must be 14 bool or 0/1 uint8 values, got float32 \(14,\)"),
    (np.full(14, 2, np.uint8), r"truth 'annotated' must be 14 bool or 0/1 uint8 values, got uint8 \(14,\)"),
    (np.arange(14) != 2, r"truth channel 'Cardiomegaly' is not annotated but its mask is not empty"),
])
def test_a_malformed_annotated_is_refused_naming_the_truth_file(tmp_path, annotated, message):
    truth = np.zeros((14, 4, 4), np.uint8)
    truth[CARDIO, :2, :2] = 1
    np.savez_compressed(tmp_path / "bad.npz", mask=truth, annotated=annotated)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'bad.npz'}: {message}$"):
        read_truth(tmp_path / "bad.npz")


def test_label_quality_scores_labels_against_prepared_chexlocalize_truth(tmp_path, capsys):
    """End to end: CheXlocalize's JSON -> prepare-chexlocalize -> labels written at the datalist ids of
    prepare-chexpert -> label-quality."""
    mask_util = pytest.importorskip("pycocotools.mask")
    from cxrdoll.labels.writer import label_path

    cardio = np.zeros((8, 12), np.uint8)
    cardio[:4, :6] = 1  # the top-left quarter of a landscape image: 24 pixels
    empty = np.zeros((8, 12), np.uint8)

    def rle(mask):
        encoded = mask_util.encode(np.asfortranarray(mask))
        return {"size": [8, 12], "counts": encoded["counts"].decode()}

    names = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Lung Lesion",
             "Airspace Opacity", "Pleural Effusion", "Pneumothorax", "Support Devices")
    gt = tmp_path / "gt_segmentations_val.json"
    gt.write_text(json.dumps({"patient64541_study1_view1_frontal":
                              {name: rle(cardio if name == "Cardiomegaly" else empty) for name in names}}))
    assert main(["prepare-chexlocalize", "--gt", str(gt), "--out", str(tmp_path / "truth")]) == 0
    mask = np.zeros((14, 4, 4), np.uint8)
    mask[CARDIO, :2, :1] = 1  # enlarged 3x across, 2x down: the left half of the truth (12 of 24 pixels)
    mask[OBSERVATIONS.index("Fracture"), 3, :] = 1  # unannotated: not a false positive
    mask[EDEMA, 3, :] = 1  # annotated and empty: a false positive
    state = np.full(14, -1, np.int8)
    state[[CARDIO, EDEMA, OBSERVATIONS.index("Fracture")]] = 1
    item_id = "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"  # valid.csv's Path
    write_label(label_path(tmp_path / "labels", item_id), mask, state, mask.astype(np.float32))
    capsys.readouterr()
    assert main(["label-quality", "--labels", f"doll={tmp_path / 'labels'}", "--truth", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "q"), "--bootstrap", "0"]) == 0
    result = json.loads((tmp_path / "q" / "label_quality.json").read_text())
    doll = result["labellings"]["doll"]
    assert result["images"] == 1 and doll["iou"]["per_observation"]["Cardiomegaly"]["value"] == pytest.approx(0.5)
    assert doll["iou"]["per_observation"]["Fracture"]["n"] == 0 and doll["iou"]["mean"] == pytest.approx(0.5)
    assert doll["false_positive"]["Edema"] == 1 and doll["false_positive"]["Fracture"] == 0
    assert doll["truth_positive"]["Cardiomegaly"] == 1 and sum(doll["truth_positive"].values()) == 1
    assert doll["truth_annotated"]["Fracture"] == 0 and doll["truth_annotated"]["Lung Opacity"] == 1
    assert ("Left out where the truth does not annotate them (neither scored nor false positives there): Pneumonia "
            "(annotated on 0 of 1), Pleural Other (annotated on 0 of 1), Fracture (annotated on 0 of 1).\n"
            ) in capsys.readouterr().out


def test_a_mean_ci_resting_on_exactly_half_of_the_resamples_is_given():
    """The mean's CI is left out only when *fewer* than half the resamples keep every observation. Two
    observations each scored on one of two images: a resample keeps both when it draws both images; with a
    seed where 2 of 4 resamples do, the CI is given, and is [0.4, 0.4] (each kept resample averages 0.2 and 0.6)."""
    values = np.full((2, len(LOCALISABLE_OBSERVATIONS)), np.nan)
    values[0, 0], values[1, 1] = 0.2, 0.6

    def kept(seed):
        rng = np.random.default_rng(seed)
        return sum(len(set(rng.integers(0, 2, size=2).tolist())) == 2 for _ in range(4))

    seed = next(s for s in range(100) if kept(s) == 2)
    result = summarise(values, n_boot=4, seed=seed)
    assert result["mean_resamples"] == 2
    assert result["mean_ci"] == [pytest.approx(0.4), pytest.approx(0.4)]


def test_a_paired_difference_of_zero_is_never_ahead():
    """'ahead' is the share of resamples where the reference is strictly higher: identical scores tie in
    every resample, so the reference is ahead in none (not all) of them."""
    rng = np.random.default_rng(0)
    values = np.full((10, len(LOCALISABLE_OBSERVATIONS)), np.nan)
    values[:, 0] = rng.uniform(0.2, 0.8, 10)
    paired = paired_difference(values, values.copy(), n_boot=100, seed=0)
    assert paired["diff"] == 0.0 and paired["ci"] == [0.0, 0.0] and paired["resamples"] == 100
    assert paired["ahead"] == 0.0


def test_the_report_gives_the_largest_n_over_labellings(tmp_path):
    """The per-observation tables' n column is the most images any labelling was scored on: Edema is
    targeted by one labelling (n 1) and not by the other (n 0, '—'), so the row reads n 1."""
    truth_dir = tmp_path / "truth"
    truth = np.zeros((14, 4, 4), np.uint8)
    truth[CARDIO, :2, :2] = 1
    truth[EDEMA, 2:, 2:] = 1
    truth_dir.mkdir()
    np.savez_compressed(truth_dir / "a.npz", mask=truth)
    top_left = np.zeros((4, 4), np.uint8)
    top_left[:2, :2] = 1
    _label(tmp_path / "one", "a", top_left, top_left * 1.0, edema_state=1)
    _label(tmp_path / "two", "a", top_left, top_left * 1.0, edema_state=0)
    result = evaluate({"one": tmp_path / "one", "two": tmp_path / "two"}, truth_dir, n_boot=10)
    assert result["labellings"]["one"]["iou"]["per_observation"]["Edema"]["n"] == 1
    assert result["labellings"]["two"]["iou"]["per_observation"]["Edema"]["n"] == 0
    report = markdown_report(result)
    # empty soft maps among the maps scored: "two" was scored on Cardiomegaly only, though the truth has 2 findings
    summary = [line for line in report.splitlines() if line.startswith(("| one |", "| two |"))][:2]
    assert [row.rsplit(" | ", 1)[1] for row in summary] == ["1 of 2 |", "0 of 1 |"]
    assert "| Edema | 1 | 0.000 | — |" in report
    assert "| Cardiomegaly | 1 | 1.000 | 1.000 |" in report


def test_a_flat_peak_along_a_row_resolves_to_its_middle():
    """Ties (0, 0) .. (0, 4) have centroid (y 0, x 2): the peak is (0, 2), not the first tie, nor the tie
    nearest (2, 0) (the centroid with its axes swapped)."""
    soft = np.zeros((5, 5))
    soft[0, :] = 1.0
    assert peak_pixel(soft) == (0, 2)
    truth = np.zeros((5, 5), bool)
    truth[0, 2] = True
    assert hit(soft, truth) == 1.0


def test_the_tie_nearest_the_centroid_is_by_straight_line_distance_to_the_mean_position():
    """Ties (3, 3) (7, 7) (5, 2) (5, 8) centre on (5, 5): the diagonal ones are nearer in a straight line
    (sqrt 8 < 3), though farther in city-block distance (4 > 3). Ties at columns 0, 1, 2, 9 of a row centre
    on column 3 (their mean; the median, 1.5, would pick column 1)."""
    soft = np.zeros((10, 10))
    soft[[3, 7, 5, 5], [3, 7, 2, 8]] = 1.0
    assert peak_pixel(soft) == (3, 3)
    soft = np.zeros((1, 10))
    soft[0, [0, 1, 2, 9]] = 1.0
    assert peak_pixel(soft) == (0, 2)


def test_an_observation_missing_from_some_resamples_still_gets_its_ci():
    """An observation scored on 2 of 40 images is absent from about 13 % of resamples; the CI comes from the
    others, whose means lie between its two scores 0.1 and 0.3, so it is [0.1, 0.3]."""
    values = np.full((40, len(LOCALISABLE_OBSERVATIONS)), np.nan)
    values[:, 0] = np.linspace(0.2, 0.8, 40)
    values[[0, 1], 1] = [0.1, 0.3]
    rare = summarise(values, 1000, seed=0)["per_observation"][LOCALISABLE_OBSERVATIONS[1]]
    assert rare == {"value": pytest.approx(0.2), "ci": [pytest.approx(0.1), pytest.approx(0.3)], "n": 2}


def test_scoring_in_threads_keeps_each_image_in_its_row_and_stops_at_a_bad_file(tmp_path):
    """label-quality --workers: threads finish out of order, yet each image's scores stay in its own row
    and the counts add up as one thread makes them; a broken label file fails the run naming it."""
    rng = np.random.default_rng(0)
    (tmp_path / "truth").mkdir()
    ids = [f"x{i}" for i in range(7)]
    for k, item_id in enumerate(ids):
        truth = np.zeros((14, 16, 16), np.uint8)
        truth[CARDIO, k:k + 6, 2:10] = 1
        truth[EDEMA, 8:, 8:] = k % 2  # Edema on every other image: false positives where it is absent
        np.savez_compressed(tmp_path / "truth" / f"{item_id}.npz", mask=truth)
        soft = rng.random((16, 16)).astype(np.float32)
        _label(tmp_path / "labels", item_id, soft > 0.5, soft, edema_state=1, size=16)
    labels = {i: tmp_path / "labels" / f"{i}.npz" for i in ids}
    truths = {i: tmp_path / "truth" / f"{i}.npz" for i in ids}
    one = score_labelling(labels, truths, ids)
    many = score_labelling(labels, truths, ids, workers=3)
    for metric, values in one.values.items():
        np.testing.assert_array_equal(many.values[metric], values)
        alone = [score_labelling(labels, truths, [i]).values[metric][0] for i in ids]  # row k is image k's
        np.testing.assert_array_equal(values, np.stack(alone))
    for field in ("truth_positive", "false_positive", "annotated", "empty_soft"):
        np.testing.assert_array_equal(getattr(many, field), getattr(one, field))
    e = LOCALISABLE_OBSERVATIONS.index("Edema")
    assert (one.truth_positive[e], one.false_positive[e]) == (3, 4)
    np.testing.assert_array_equal(score_labelling(labels, truths, ids, workers=0).values["iou"], one.values["iou"])
    labels["x5"].write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"x5.npz: not a readable label file"):
        score_labelling(labels, truths, ids, workers=3)


def test_labellings_without_images_in_common_with_the_truth_are_refused(tmp_path):
    """No labelling, a labelling none of whose files has truth (a wrong folder), and labellings that each
    match the truth but on different images: each is named instead of scoring nothing."""
    truth = np.zeros((14, 4, 4), np.uint8)
    truth[CARDIO, :2, :2] = 1
    (tmp_path / "truth").mkdir()
    for item_id in ("a", "b"):
        np.savez_compressed(tmp_path / "truth" / f"{item_id}.npz", mask=truth)
        _label(tmp_path / item_id, item_id, truth[CARDIO], truth[CARDIO] * 1.0)
    _label(tmp_path / "other", "c", truth[CARDIO], truth[CARDIO] * 1.0)
    with pytest.raises(ValueError, match="no labellings given"):
        evaluate({}, tmp_path / "truth")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'other'}: no label file matches a truth file under"):
        evaluate({"a": tmp_path / "a", "other": tmp_path / "other"}, tmp_path / "truth")
    with pytest.raises(ValueError, match=r"the labellings \['a', 'b'\] have no image with truth in common"):
        evaluate({"a": tmp_path / "a", "b": tmp_path / "b"}, tmp_path / "truth")


def test_files_without_their_arrays_are_named(tmp_path):
    np.savez_compressed(tmp_path / "t.npz", annotated=np.ones(14, bool))
    with pytest.raises(ValueError, match=r"t.npz: truth file lacks key 'mask'$"):
        read_truth(tmp_path / "t.npz")
    np.savez_compressed(tmp_path / "l.npz", mask=np.zeros((14, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"l.npz: label file lacks 'mask' or 'state'$"):
        score_labelling({"x": tmp_path / "l.npz"}, {"x": tmp_path / "t.npz"}, ["x"])
