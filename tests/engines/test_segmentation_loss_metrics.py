"""Masked BCE + Dice loss and per-class Dice/IoU/HD95 against hand computation."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from cxrdoll.engines.segmentation import (
    MaskedBCEDiceLoss,
    SegmentationMetrics,
    SegmentationRecorder,
    UndefinedKeyMetric,
    per_image_scores,
)

NAN = float("nan")


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _bce(x: float, t: float) -> float:
    p = _sig(x)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_loss_matches_hand_computation_with_ignored_channel_and_pixel():
    # one image, three channels of 2 pixels: positive target, empty target (state 0), ignored (state -1)
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, -3.0]], [[4.0, 4.0]]]])
    target = torch.tensor([[[[1.0, NAN]], [[0.0, 0.0]], [[NAN, NAN]]]])
    counted = [(2.0, 1.0), (0.5, 0.0), (-3.0, 0.0)]  # pixel (0,1) of channel 0 is ignored too
    bce = sum(_bce(x, t) for x, t in counted) / 3
    s = 1.0
    dice0 = 1 - (2 * _sig(2.0) * 1 + s) / (_sig(2.0) + 1 + s)
    dice1 = 1 - (0 + s) / (_sig(0.5) + _sig(-3.0) + s)
    # by default the empty target teaches through BCE only; Dice averages the pairs with a positive pixel
    loss = MaskedBCEDiceLoss(smooth=s)(logits, target)
    assert loss.item() == pytest.approx(bce + dice0, rel=1e-6)
    with_empty = MaskedBCEDiceLoss(smooth=s, dice_on_empty=True)(logits, target)
    assert with_empty.item() == pytest.approx(bce + (dice0 + dice1) / 2, rel=1e-6)
    weighted = MaskedBCEDiceLoss(bce_weight=0.5, dice_weight=2.0, smooth=s, dice_on_empty=True)(logits, target)
    assert weighted.item() == pytest.approx(0.5 * bce + 2.0 * (dice0 + dice1) / 2, rel=1e-6)


def test_batch_of_empty_targets_is_bce_alone():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert MaskedBCEDiceLoss()(logits, target).item() == pytest.approx(bce.item(), rel=1e-6)


def test_ignored_channel_gets_no_gradient_and_empty_target_pushes_down():
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    target = torch.cat([torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), NAN)], dim=1)
    MaskedBCEDiceLoss()(logits, target).backward()
    assert torch.all(logits.grad[0, 1] == 0)
    assert torch.all(logits.grad[0, 0] > 0)  # descending lowers the logits of an empty target


def test_all_ignored_batch_is_zero_with_graph():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = MaskedBCEDiceLoss()(logits, torch.full((2, 3, 4, 4), NAN))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_loss_shape_mismatch_error():
    with pytest.raises(ValueError, match=r"logits \(1, 2, 4, 4\) and target \(1, 3, 4, 4\) differ in shape"):
        MaskedBCEDiceLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("weights", [(-0.5, 1.0), (1.0, -0.5), (0.0, 0.0)])
def test_negative_or_all_zero_loss_weights_are_refused(weights):
    bce, dice = weights
    with pytest.raises(ValueError, match=rf"^loss weights must be >= 0 and not both 0, got bce={bce}, dice={dice}$"):
        MaskedBCEDiceLoss(bce_weight=bce, dice_weight=dice)


def _square(size: int, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[r0:r1, c0:c1] = 1
    return m


def test_per_image_scores_hand_values_and_masking():
    t = _square(16, 2, 6, 2, 6)  # 16 px
    p = _square(16, 2, 6, 4, 8)  # 16 px, overlap 8
    empty = torch.zeros(16, 16)
    target = torch.stack([t, empty, torch.full((16, 16), NAN), t.clone(), empty])[None]
    target[0, 3, 2:6, 4:6] = NAN  # the overlapping half is ignored in channel 3
    pred = torch.stack([p, empty, p, p, p])[None]  # channel 4: a structure predicted where there is none
    s = per_image_scores(pred, target, ignore_empty=False)
    assert s["dice"][0, 0].item() == pytest.approx(2 * 8 / 32)
    assert s["iou"][0, 0].item() == pytest.approx(8 / 24)
    assert s["dice"][0, 1].item() == 1.0 and s["iou"][0, 1].item() == 1.0  # empty target, empty prediction
    assert s["dice"][0, 4].item() == 0.0 and s["iou"][0, 4].item() == 0.0  # empty target, false positive
    assert math.isnan(s["hd95"][0, 1].item()) and math.isnan(s["hd95"][0, 4].item())  # no distance to nothing
    assert math.isnan(s["dice"][0, 2].item()) and math.isnan(s["hd95"][0, 2].item())  # ignored channel
    assert s["dice"][0, 3].item() == 0.0  # only the non-overlapping parts remain counted
    # HD95 between two 4x4 squares shifted by 2 columns: every boundary distance is <= 2
    assert s["hd95"][0, 0].item() == pytest.approx(2.0)
    ignoring_empty = per_image_scores(pred, target, ignore_empty=True)
    assert all(math.isnan(ignoring_empty[k][0, c].item()) for k in ("dice", "iou") for c in (1, 4))
    # missed: defined where the target has the structure; 0 here (found), NaN where empty or ignored
    assert s["missed"][0, 0].item() == 0.0 and s["missed"][0, 3].item() == 0.0
    assert all(math.isnan(s["missed"][0, c].item()) for c in (1, 2, 4))


def test_per_image_scores_refuses_an_image_without_its_batch_axis():
    with pytest.raises(ValueError, match=r"^pred \(2, 4, 4\) and target \(2, 4, 4\) must both be \(B, C, H, W\)$"):
        per_image_scores(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))


def test_predictions_on_ignored_pixels_are_not_false_positives():
    """Devices marked ignore in a lung mask: a prediction covering them as well as the lung is a
    perfect Dice and IoU (8 counted pixels each), not 2 * 8 / (8 + 16)."""
    t = _square(16, 2, 6, 2, 4)  # 8 px
    target = t.clone()
    target[10:14, 10:12] = NAN  # 8 ignored pixels away from the lung
    pred = t.clone()
    pred[10:14, 10:12] = 1
    s = per_image_scores(pred[None, None], target[None, None], hd95=False)
    assert s["dice"][0, 0].item() == 1.0 and s["iou"][0, 0].item() == 1.0


def test_hd95_ignores_one_stray_pixel_that_the_maximum_would_report():
    """A 20 x 20 square has 76 edge pixels; a prediction equal to it plus one stray pixel has 77,
    76 at distance 0 and one at 5 sqrt(2) from the target's corner (23, 23). Its 95th percentile is 0;
    the plain Hausdorff distance would be 7.07."""
    target = _square(32, 4, 24, 4, 24)
    pred = target.clone()
    pred[28, 28] = 1
    s = per_image_scores(pred[None, None], target[None, None])
    assert s["hd95"][0, 0].item() == 0.0
    assert s["dice"][0, 0].item() == pytest.approx(2 * 400 / 801)


def test_an_equal_score_later_keeps_the_first_best_model(tmp_path):
    """The model is saved when the key metric improves: a tie is not an improvement."""
    net = torch.nn.Conv2d(1, 1, 1)
    recorder = SegmentationRecorder(tmp_path / "h.json", "val_mean_dice", net, tmp_path / "m.pt")
    for epoch, weight in ((1, 0.3), (2, 0.9)):
        with torch.no_grad():
            net.weight.fill_(weight)
        recorder(SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics={"val_mean_dice": 0.5})))
    assert json.loads((tmp_path / "h.json").read_text())["best"]["epoch"] == 1
    assert torch.load(tmp_path / "m.pt", weights_only=True)["weight"].flatten().tolist() == [pytest.approx(0.3)]


def test_metric_and_recorder_publish_per_class_and_history(tmp_path):
    t = _square(16, 2, 6, 2, 6)
    p = _square(16, 2, 6, 4, 8)
    metric = SegmentationMetrics(["a", "b"], ignore_empty=True)
    engine = Engine(lambda e, b: b)
    metric.attach(engine, "val_mean_dice")
    net = torch.nn.Conv2d(1, 1, 1)
    recorder = SegmentationRecorder(tmp_path / "h.json", "val_mean_dice", net, tmp_path / "m.pt", info={"mode": "x"})
    recorder.attach(engine)
    batches = [
        (torch.stack([p, p])[None], torch.stack([t, t])[None]),
        (torch.stack([t, p])[None], torch.stack([t, torch.zeros(16, 16)])[None]),
    ]
    engine.run(batches, max_epochs=1)
    m = engine.state.metrics
    assert m["val_mean_dice/dice/a"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["val_mean_dice/dice/b"] == pytest.approx(0.5)  # the empty target of image 2 is undefined
    assert m["val_mean_dice"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["val_mean_dice/iou/a"] == pytest.approx((8 / 24 + 1.0) / 2)
    # class means beside the key metric, which is the Dice mean itself (no second copy of it)
    assert sorted(k for k in m if k.count("/") == 1) == [f"val_mean_dice/{k}" for k in ("hd95", "iou", "missed")]
    history = json.loads((tmp_path / "h.json").read_text())
    assert history["mode"] == "x" and history["history"][0]["val_mean_dice"] == pytest.approx(0.625)
    assert (tmp_path / "m.pt").is_file()


def test_recorder_keeps_numpy_and_tensor_scalars_and_names_a_missing_key_metric(tmp_path):
    """Metrics may be numpy or 0-d tensor scalars; anything else (a per-class vector) stays out of the JSON."""
    recorder = SegmentationRecorder(tmp_path / "h.json", "val_mean_dice")
    metrics = {"val_mean_dice": np.float32(0.5), "val_loss": torch.tensor(0.25), "per_class": torch.zeros(3)}
    recorder(SimpleNamespace(state=SimpleNamespace(epoch=1, metrics=metrics)))
    record = json.loads((tmp_path / "h.json").read_text())["history"][0]
    assert (record["val_mean_dice"], record["val_loss"]) == (0.5, 0.25) and "per_class" not in record
    with pytest.raises(KeyError, match=r"key metric 'val_dice' not among the evaluator's metrics \['elapsed_s', 'epoch', 'val_loss'\]"):
        SegmentationRecorder(tmp_path / "h.json", "val_dice")(
            SimpleNamespace(state=SimpleNamespace(epoch=1, metrics={"val_loss": 0.25})))
    with pytest.raises(ValueError, match=r"^network and model_file go together"):
        SegmentationRecorder(tmp_path / "h.json", "val_dice", model_file=tmp_path / "m.pt")


def test_metric_rejects_wrong_class_count():
    metric = SegmentationMetrics(["a"])
    metric.reset()
    with pytest.raises(ValueError, match="prediction has 2 channels for 1 class names"):
        metric.update((torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)))


def test_an_undefined_hd95_is_not_last_epochs_value(tmp_path):
    """Ignite never clears engine.state.metrics: an empty prediction's HD95 must not inherit the previous epoch's."""
    target = _square(32, 8, 16, 8, 16)
    predictions = {1: _square(32, 8, 16, 8, 20), 2: torch.zeros(32, 32)}
    evaluator = Engine(lambda e, b: (predictions[e.state.epoch][None, None], target[None, None]))
    SegmentationMetrics(["heart"]).attach(evaluator, "val_mean_dice")
    SegmentationRecorder(tmp_path / "h.json", "val_mean_dice").attach(evaluator)
    for epoch in (1, 2):  # as MONAI's Evaluator.run(global_epoch) sets it up
        evaluator.state.max_epochs, evaluator.state.epoch, evaluator.state.iteration = epoch, epoch - 1, 0
        evaluator.run([0])
    first, second = json.loads((tmp_path / "h.json").read_text())["history"]
    assert first["val_mean_dice/hd95/heart"] == pytest.approx(4.0)
    assert "val_mean_dice/hd95/heart" not in second and second["val_mean_dice/hd95"] is None
    # the miss HD95 leaves out is counted beside it: HD95 alone would not tell epoch 2 from no data
    assert first["val_mean_dice/missed/heart"] == 0.0 and first["val_mean_dice/missed"] == 0.0
    assert second["val_mean_dice/missed/heart"] == 1.0 and second["val_mean_dice/missed"] == 1.0


def test_a_resumed_recorder_keeps_its_clock_and_refuses_other_settings(tmp_path):
    net = torch.nn.Conv2d(1, 1, 1)
    recorder = SegmentationRecorder(tmp_path / "h.json", "val_mean_dice", net, tmp_path / "m.pt", info={"image_size": 320})
    recorder._start -= 100.0  # as if validated 100 s after the start
    recorder(SimpleNamespace(state=SimpleNamespace(epoch=1, metrics={"val_mean_dice": 0.5})))
    state = recorder.state_dict()

    resumed = SegmentationRecorder(tmp_path / "h.json", "val_mean_dice", net, tmp_path / "m.pt", info={"image_size": 320})
    resumed.load_state_dict(state)
    resumed(SimpleNamespace(state=SimpleNamespace(epoch=2, metrics={"val_mean_dice": 0.6})))
    elapsed = [h["elapsed_s"] for h in json.loads((tmp_path / "h.json").read_text())["history"]]
    assert elapsed[0] >= 100.0 and elapsed[1] >= elapsed[0]
    # the history file stays the resumed run's: a later resume tells its records from another run's by this id
    assert resumed.run_id == recorder.run_id == json.loads((tmp_path / "h.json").read_text())["run_id"]
    other = SegmentationRecorder(tmp_path / "h.json", "val_mean_dice", net, tmp_path / "m.pt", info={"image_size": 256})
    with pytest.raises(ValueError, match=r"^the resume checkpoint was trained with image_size=320, not 256$"):
        other.load_state_dict(state)
    SegmentationRecorder(tmp_path / "h.json", "val_mean_dice").load_state_dict({"history": [], "best": None})  # older checkpoints


def test_a_resumed_recorder_gives_its_evaluator_the_recorded_best_and_replaces_an_undefined_one(tmp_path):
    net = torch.nn.Conv2d(1, 1, 1)
    files = (tmp_path / "h.json", "val_mean_dice", net, tmp_path / "m.pt")
    recorder = SegmentationRecorder(*files)
    recorder.load_state_dict({"history": [{"epoch": 2, "val_mean_dice": 0.7}], "best": {"epoch": 2, "val_mean_dice": 0.7}})
    evaluator = Engine(lambda e, b: e.state.metrics.update(val_mean_dice=0.6))
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1, -1  # as MONAI's Workflow starts
    recorder.attach(evaluator)
    evaluator.run([0], max_epochs=1)
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.7, 2)

    undefined = SegmentationRecorder(*files)
    undefined.load_state_dict({"history": [{"epoch": 1, "val_mean_dice": None}], "best": {"epoch": 1, "val_mean_dice": None}})
    undefined(SimpleNamespace(state=SimpleNamespace(epoch=2, metrics={"val_mean_dice": 0.4})))
    assert json.loads((tmp_path / "h.json").read_text())["best"]["epoch"] == 2 and (tmp_path / "m.pt").is_file()


def test_a_resumed_recorder_records_a_re_run_epoch_once_and_keeps_the_better_model(tmp_path):
    """Validated every 2 epochs: the checkpoint after epoch 1 holds no record, the file epoch 2's (saved to
    model.pt just before a kill). The re-run epoch 2 replaces that record, and, worse, must not overwrite the
    model as the first record of the run used to."""
    import copy

    net = torch.nn.Conv2d(1, 1, 1)

    def validate(recorder: SegmentationRecorder, epoch: int, dice: float) -> None:
        with torch.no_grad():
            net.weight.fill_(dice)
        recorder(SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics={"val_mean_dice": dice})))

    files = (tmp_path / "h.json", "val_mean_dice", net, tmp_path / "m.pt")
    killed = SegmentationRecorder(*files)
    checkpoint = copy.deepcopy(killed.state_dict())  # after epoch 1, nothing validated yet
    validate(killed, 2, 0.7)
    resumed = SegmentationRecorder(*files)
    resumed.load_state_dict(checkpoint)
    validate(resumed, 2, 0.5)
    validate(resumed, 4, 0.6)
    written = json.loads((tmp_path / "h.json").read_text())
    assert [(h["epoch"], h["val_mean_dice"]) for h in written["history"]] == [(2, 0.5), (4, 0.6)]
    assert (written["best"]["epoch"], written["best"]["val_mean_dice"]) == (2, 0.7)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["weight"].flatten().tolist() == [pytest.approx(0.7)]


def test_a_validation_whose_every_truth_mask_is_empty_stops_instead_of_selecting_the_first_model(tmp_path):
    """All-empty validation masks gave val_mean_dice NaN every epoch; the recorder kept epoch 1's model.pt as
    'best' and the run exited 0. Scored with ignore_empty false, the same masks are defined."""
    empty = torch.zeros(1, 2, 16, 16)
    prediction = torch.zeros(1, 2, 16, 16)
    prediction[0, 0, 2:6, 2:6] = 1.0
    net = torch.nn.Conv2d(1, 1, 1)
    for ignore_empty in (True, False):
        evaluator = Engine(lambda e, b: b)
        SegmentationMetrics(["a", "b"], ignore_empty=ignore_empty).attach(evaluator, "val_mean_dice")
        SegmentationRecorder(tmp_path / f"h{ignore_empty}.json", "val_mean_dice", net,
                             tmp_path / f"m{ignore_empty}.pt").attach(evaluator)
        if ignore_empty:
            with pytest.raises(UndefinedKeyMetric, match=r"^validation at epoch 1: val_mean_dice is undefined, so it "
                                                         r"cannot select .*mTrue\.pt: no validation mask has a positive"):
                evaluator.run([(prediction, empty)], max_epochs=1)
            assert not (tmp_path / "mTrue.pt").exists() and not (tmp_path / "hTrue.json").exists()
        else:
            evaluator.run([(prediction, empty)], max_epochs=1)
            assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(0.5)  # a: 0 (false positive), b: 1
            assert (tmp_path / "mFalse.pt").is_file()
