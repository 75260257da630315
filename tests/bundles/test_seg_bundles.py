"""cxr_seg_pretrain and cxr_seg_adapter run end to end on tiny data (CPU, 32 px, a tiny encoder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdoll.deploy.seg_bundle import SegBundle
from cxrdoll.engines.bundle_run import make_workflow, run_bundle
from tests.bundles.classifier_data import write_tiny_datalist
from tests.bundles.seg_data import write_tiny_doll, write_tiny_downstream

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TINY = {"encoder_name": "densenet_tiny", "decoder_channels": [32, 16, 16, 8, 8], "image_size": 32,
        "batch_size": 2, "num_workers": 0, "device": "cpu", "max_epochs": 1}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict:
    """One pre-training epoch (2 iterations) on DoLL labels; returns paths."""
    root = tmp_path_factory.mktemp("seg")
    datalist = write_tiny_doll(root / "doll")
    out = root / "pretrain"
    run_bundle(BUNDLES / "cxr_seg_pretrain", ("train.json",), datalist=str(datalist), output_dir=str(out), log_every=1,
               **TINY)
    return {"root": root, "doll": datalist, "out": out, "model": out / "model.pt"}


@pytest.mark.parametrize("bundle", ["cxr_seg_pretrain", "cxr_seg_adapter"])
def test_a_side_the_segmenter_cannot_take_is_refused_before_training(pretrained, tmp_path, bundle):
    """Not a multiple of 32 used to fail at the first forward pass, after caching (the adapter's CacheDataset)."""
    from cxrdoll.errors import user_error

    if bundle == "cxr_seg_pretrain":
        settings = {"datalist": str(pretrained["doll"])}
    else:
        settings = {"datalist": str(write_tiny_downstream(tmp_path / "down")), "mode": "full"}
    with pytest.raises(RuntimeError) as err:
        run_bundle(BUNDLES / bundle, ("train.json",), output_dir=str(tmp_path / "o"), **{**TINY, **settings,
                                                                                         "image_size": 48})
    assert str(user_error(err.value)).startswith("image size 48 px is not a multiple of 32 px")
    assert not list((tmp_path / "o").glob("*.pt"))


@pytest.mark.parametrize(("bundle", "given", "looks_like"), [
    ("cxr_seg_pretrain", "classification", "a classification datalist"),
    ("cxr_seg_pretrain", "downstream", "a downstream segmentation datalist"),
    ("cxr_seg_adapter", "classification", "a classification datalist"),
    ("cxr_seg_adapter", "doll", "a DoLL label datalist"),
])
def test_another_stages_datalist_is_one_line_before_the_run_folder_is_made(tmp_path, bundle, given, looks_like):
    """A classification datalist ended in a TypeError traceback; pre-training on a downstream
    datalist failed once training had started, leaving logs/ behind."""
    from cxrdoll.errors import one_line, user_error

    writers = {"classification": write_tiny_datalist, "doll": write_tiny_doll, "downstream": write_tiny_downstream}
    datalist = writers[given](tmp_path / given)
    settings = {"mode": "scratch"} if bundle == "cxr_seg_adapter" else {}
    with pytest.raises(RuntimeError) as err:
        run_bundle(BUNDLES / bundle, ("train.json",), datalist=str(datalist), output_dir=str(tmp_path / "o"),
                   **TINY, **settings)
    cause = user_error(err.value)
    assert isinstance(cause, ValueError), err.value
    assert one_line(cause).startswith(f"{datalist}: training[0] (id ")
    assert f"so it looks like {looks_like}" in one_line(cause) and f"; {bundle} takes" in one_line(cause)
    assert not (tmp_path / "o").exists()


def test_starting_from_a_classifier_takes_its_architecture_from_the_classifiers_record(tmp_path):
    from monai.bundle import ConfigParser

    from cxrdoll.io import write_json_atomic

    write_json_atomic(tmp_path / "metrics.json", {"best": {}, "run": {"network_name": "resnet10", "image_size": 64}})
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "cxr_seg_pretrain" / "configs" / "train.json"))
    assert parser.get_parsed_content("encoder_name") == "densenet121"  # no init_ckpt
    parser["init_ckpt"] = str(tmp_path / "model.pt")
    assert parser.get_parsed_content("encoder_name") == "resnet10"
    adapter = ConfigParser()  # the backbone-only start: mode full, a classifier and no pretrained_ckpt
    adapter.read_config(str(BUNDLES / "cxr_seg_adapter" / "configs" / "train.json"))
    adapter.update({"init_ckpt": str(tmp_path / "model.pt"), "pretrained_ckpt": None})
    assert adapter.get_parsed_content("encoder_name") == "resnet10"


def test_pretraining_refuses_to_resume_on_another_datalist_or_init_checkpoint(pretrained, tmp_path):
    """A resumed run's history would mix Dice on two validation sets, or describe weights it did not start from."""
    from cxrdoll.errors import user_error
    from cxrdoll.io import file_sha256
    from cxrdoll.networks import build_classifier

    assert json.loads((pretrained["out"] / "validation_history.json").read_text())["init_ckpt_sha256"] is None
    init = tmp_path / "cls" / "model.pt"
    init.parent.mkdir()
    torch.save(build_classifier("densenet_tiny").state_dict(), init)
    out = tmp_path / "pretrain"
    settings = {**TINY, "init_ckpt": str(init), "output_dir": str(out)}
    run_bundle(BUNDLES / "cxr_seg_pretrain", ("train.json",), datalist=str(pretrained["doll"]), **settings)
    history = json.loads((out / "validation_history.json").read_text())
    assert history["datalist_sha256"] == file_sha256(pretrained["doll"])
    assert history["init_ckpt_sha256"] == file_sha256(init)

    other = write_tiny_doll(tmp_path / "other", n_train=6)  # another listing (its hash covers paths, not images)
    for datalist, changed in ((other, "datalist_sha256"), (pretrained["doll"], "init_ckpt_sha256")):
        if changed == "init_ckpt_sha256":  # the same path, other weights
            torch.save({k: v + 1 for k, v in torch.load(init, weights_only=True).items()}, init)
        with pytest.raises(RuntimeError) as refused:
            run_bundle(BUNDLES / "cxr_seg_pretrain", ("train.json",), datalist=str(datalist),
                       **{**settings, "max_epochs": 2})
        assert str(user_error(refused.value)).startswith(
            f"{out / 'checkpoint.pt'}: the resume checkpoint was trained with {changed}='{history[changed]}', not ")
    assert len(json.loads((out / "validation_history.json").read_text())["history"]) == 1


def test_pretrain_logs_the_training_loss_to_tensorboard(pretrained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(pretrained["out"] / "logs")).Reload()
    losses = events.Scalars("train_loss")
    assert [e.step for e in losses] == [1, 2] and all(0 < e.value < 10 for e in losses)


def test_pretrain_records_history_and_evaluates_against_truth(pretrained):
    history = json.loads((pretrained["out"] / "validation_history.json").read_text())
    assert history["trainable_parameters"] > 0 and len(history["history"]) == 1
    record = history["history"][0]
    # only Cardiomegaly has a positive target in the validation labels; Edema is ignored everywhere
    assert "val_mean_dice/dice/Cardiomegaly" in record and "val_mean_dice/dice/Edema" not in record
    state = torch.load(pretrained["model"], weights_only=True)
    assert state["head.weight"].shape[0] == 14
    # true masks: the DoLL label of each positive image doubles as its truth file
    truth = pretrained["root"] / "truth"
    for item in json.loads(pretrained["doll"].read_text())["validation"]:
        with np.load(pretrained["doll"].parent / item["label"]) as label:
            truth_file = truth / (Path(item["id"]).stem + ".npz")
            truth_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(truth_file, mask=label["mask"])
    run_bundle(BUNDLES / "cxr_seg_pretrain", ("train.json", "evaluate.json"), datalist=str(pretrained["doll"]),
               output_dir=str(pretrained["out"]), truth_dir=str(truth), batch_size=2, num_workers=0, device="cpu")
    # encoder, decoder channels and size from the validation_history.json beside model.pt
    saved = (pretrained["out"] / "eval" / "metrics.csv").read_text()
    assert "val_mean_dice" in saved


def test_adapter_freezes_the_encoder_trains_the_rest_then_infers_and_exports(pretrained, tmp_path):
    datalist = write_tiny_downstream(tmp_path / "down")
    out = tmp_path / "adapter"
    network = ("encoder_name", "decoder_channels")  # from the pre-training record beside pretrained_ckpt
    wf = run_bundle(BUNDLES / "cxr_seg_adapter", ("train.json",), datalist=str(datalist), output_dir=str(out),
                    pretrained_ckpt=str(pretrained["model"]), mode="adapters", num_train=4,
                    **{k: v for k, v in TINY.items() if k not in network})
    assert wf.parser.get_parsed_content("train#trainer").state.iteration == 2
    before = torch.load(pretrained["model"], weights_only=True)
    after = torch.load(out / "model.pt", weights_only=True)
    frozen = [k for k in after if k.startswith("encoder.")]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)  # weights and BN statistics
    decoder = [k for k in after if k.startswith("decoder.") and ".adapter." not in k and k.endswith(".weight")]
    assert any(not torch.equal(after[k], before[k]) for k in decoder)  # freeze_decoder defaults to false
    assert after["head.weight"].shape[0] == 2
    assert any(after[k].abs().sum() > 0 for k in after if k.endswith("adapter.up.weight"))  # zero-init, now trained
    history = json.loads((out / "validation_history.json").read_text())
    assert history["mode"] == "adapters" and history["num_train"] == 4
    assert [history[k] for k in network] == [TINY[k] for k in network]
    assert 0 < history["trainable_parameters"] < history["total_parameters"]
    assert {"val_mean_dice/dice/blob", "val_mean_dice/iou/bar"} <= set(history["history"][0])

    run_bundle(BUNDLES / "cxr_seg_adapter", ("train.json", "evaluate.json"), datalist=str(datalist),
               output_dir=str(out), num_workers=0, device="cpu")  # network and size from validation_history.json
    assert "val_mean_dice" in (out / "eval" / "metrics.csv").read_text()
    swapped = json.loads(datalist.read_text())  # the same masks, listed bar first: channel 0 is blob's
    swapped["classes"] = ["bar", "blob"]
    for item in swapped["training"] + swapped["validation"]:
        item["label"] = item["label"][::-1]
    (tmp_path / "down" / "swapped.json").write_text(json.dumps(swapped))
    with pytest.raises(RuntimeError) as refused:  # MONAI wraps the error of a config expression
        run_bundle(BUNDLES / "cxr_seg_adapter", ("train.json", "evaluate.json"),
                   datalist=str(tmp_path / "down" / "swapped.json"), output_dir=str(out), num_workers=0, device="cpu")
    assert "classes ['bar', 'blob'] are not the ['blob', 'bar'] (in this order)" in str(refused.value.__cause__)

    images = tmp_path / "down" / "images"
    infer = {k: v for k, v in TINY.items() if k != "max_epochs"}
    # png: network, size and class names as validation_history.json beside model.pt records them; nifti: given
    recorded = {"num_workers": 0, "device": "cpu"}
    for fmt, suffix, given in (("png", ".png", recorded), ("nifti", ".nii.gz", {**infer, "class_names": ["blob", "bar"]})):
        pred_dir = tmp_path / f"pred_{fmt}"
        run_bundle(BUNDLES / "cxr_seg_adapter", ("inference.json",), dataset_dir=str(images), output_dir=str(pred_dir),
                   ckpt_path=str(out / "model.pt"), output_format=fmt, **given)
        written = sorted(p.relative_to(pred_dir).as_posix() for p in pred_dir.rglob(f"*{suffix}"))
        assert len(written) == 8 * 4  # 8 images x 2 classes x (mask, probability)
        assert f"training_0/blob_mask{suffix}" in written and f"training_0/bar_prob{suffix}" in written
    mask = np.asarray(Image.open(tmp_path / "pred_png" / "training_0" / "blob_mask.png"))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
    assert (tmp_path / "pred_png" / "skipped.csv").read_text() == "id,reason\n"

    (images / "zz_corrupt.png").write_bytes(b"not a png")  # one bad file among good ones: skipped and listed
    run_bundle(BUNDLES / "cxr_seg_adapter", ("inference.json",), dataset_dir=str(images), output_dir=str(tmp_path / "skip"),
               ckpt_path=str(out / "model.pt"), class_names=["blob", "bar"], **infer)
    assert len(list((tmp_path / "skip").rglob("*.png"))) == 8 * 4 and not (tmp_path / "skip" / "zz_corrupt").exists()
    skipped = (tmp_path / "skip" / "skipped.csv").read_text().splitlines()
    assert len(skipped) == 2 and skipped[1].startswith("zz_corrupt,") and "zz_corrupt.png" in skipped[1]

    # The deploy app on this bundle trained in place: its metadata.json still declares 5 SCR structures at 320 px
    in_place = tmp_path / "bundle"
    shutil.copytree(BUNDLES / "cxr_seg_adapter" / "configs", in_place / "configs")
    shutil.copytree(out, in_place / "models", ignore=shutil.ignore_patterns("eval", "logs", "checkpoint.pt"))
    deployed = SegBundle.load(in_place)
    assert deployed.channel_names == ["blob", "bar"] and deployed.spatial_shape == (32, 32)
    assert deployed.predict(np.zeros((1, 40, 48), np.float32)).shape == (2, 40, 48)


def test_adapter_training_resumes_and_no_segmentation_run_overwrites_a_finished_one(pretrained, tmp_path):
    """Re-running the command continues from checkpoint.pt (it used to train again, replacing model.pt at its
    first validation); a run that does not resume refuses a folder another run left, in both bundles."""
    from cxrdoll.errors import user_error

    adapter = BUNDLES / "cxr_seg_adapter"
    out = tmp_path / "adapter"
    settings = {"datalist": str(write_tiny_downstream(tmp_path / "down", n_train=2, n_val=1)), "output_dir": str(out),
                "pretrained_ckpt": str(pretrained["model"]),
                **{k: v for k, v in TINY.items() if k not in ("encoder_name", "decoder_channels")}}
    run_bundle(adapter, ("train.json",), **settings)
    first = json.loads((out / "validation_history.json").read_text())
    assert (out / "checkpoint.pt").is_file() and first["learning_rate"] == 0.001 and first["pretrained_ckpt_sha256"]
    trainer = run_bundle(adapter, ("train.json",), **{**settings, "max_epochs": 2}).parser.get_parsed_content(
        "train#trainer")
    assert (trainer.state.epoch, trainer.state.iteration) == (2, 2)  # one more epoch of one batch
    history = json.loads((out / "validation_history.json").read_text())
    assert [h["epoch"] for h in history["history"]] == [1, 2] and history["run_id"] == first["run_id"]
    with pytest.raises(RuntimeError) as refused:
        run_bundle(adapter, ("train.json",), **{**settings, "max_epochs": 3, "learning_rate": 0.01})
    assert str(user_error(refused.value)) == (f"{out / 'checkpoint.pt'}: the resume checkpoint was trained with "
                                              "learning_rate=0.001, not 0.01: resume with its settings, or start "
                                              "over in a new or empty output_dir")
    with pytest.raises(RuntimeError) as refused:  # named, not as the optimizer's parameter groups that differ
        run_bundle(adapter, ("train.json",), **{**settings, "max_epochs": 3, "freeze_decoder": True})
    assert str(user_error(refused.value)).startswith(f"{out / 'checkpoint.pt'}: the resume checkpoint was trained "
                                                     "with freeze_decoder=False, not True, trainable_parameters=")

    pretrain = tmp_path / "pretrain"
    shutil.copytree(pretrained["out"], pretrain)
    model = {folder: (folder / "model.pt").read_bytes() for folder in (out, pretrain)}
    for bundle, folder, given in ((adapter, out, settings), (BUNDLES / "cxr_seg_pretrain", pretrain,
                                                              {**TINY, "datalist": str(pretrained["doll"])})):
        with pytest.raises(RuntimeError) as refused:
            run_bundle(bundle, ("train.json",), **{**given, "output_dir": str(folder), "resume": False})
        assert str(user_error(refused.value)) == (
            f"{folder}: holds another run's validation_history.json and model.pt, which this run would overwrite: "
            "resume it with --resume true, or use a new or empty output_dir")
        assert (folder / "model.pt").read_bytes() == model[folder]


def test_adapter_torchscript_export_matches_eager(pretrained, tmp_path):
    from monai.bundle import ConfigParser, ckpt_export

    datalist = write_tiny_downstream(tmp_path / "down", n_train=2, n_val=1)
    out = tmp_path / "adapter"
    run_bundle(BUNDLES / "cxr_seg_adapter", ("train.json",), datalist=str(datalist), output_dir=str(out),
               pretrained_ckpt=str(pretrained["model"]), mode="adapters", **TINY)
    config = BUNDLES / "cxr_seg_adapter" / "configs"
    overrides = json.dumps({k: TINY[k] for k in ("encoder_name", "decoder_channels")} | {"class_names": ["blob", "bar"]})
    ckpt_export(net_id="network_def", filepath=str(out / "model.ts"), ckpt_file=str(out / "model.pt"),
                meta_file=str(config / "metadata.json"), config_file=str(config / "inference.json"),
                bundle_root=str(BUNDLES / "cxr_seg_adapter"), args_file=None, **json.loads(overrides))
    scripted = torch.jit.load(str(out / "model.ts"))
    parser = ConfigParser()
    parser.read_config(str(config / "inference.json"))
    parser.update(json.loads(overrides))
    eager = parser.get_parsed_content("network_def")
    eager.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    eager.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), eager(x), atol=1e-5)


def test_adapter_metadata_matches_the_inference_network():
    from monai.bundle import ConfigParser

    config = BUNDLES / "cxr_seg_adapter" / "configs"
    meta = json.loads((config / "metadata.json").read_text())["network_data_format"]
    parser = ConfigParser()
    parser.read_config(str(config / "inference.json"))
    names = parser.get_parsed_content("class_names")
    assert meta["outputs"]["pred"]["channel_def"] == {str(i): n for i, n in enumerate(names)}
    assert meta["inputs"]["image"]["spatial_shape"] == [parser.get_parsed_content("image_size")] * 2
    parser.update({"encoder_name": "densenet_tiny", "decoder_channels": [32, 16, 16, 8, 8]})
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        y = net(torch.rand(1, meta["inputs"]["image"]["num_channels"], 64, 64))
    assert y.shape[1] == meta["outputs"]["pred"]["num_channels"] == len(names)


def test_all_empty_training_masks_are_refused_after_the_first_epoch(tmp_path):
    """Masks of the wrong polarity or DoLL labels that came out empty trained a network to predict
    nothing, with NaN validation Dice and exit 0."""
    from cxrdoll.engines.empty_masks import EmptyMasks
    from cxrdoll.io import save_png_atomic

    datalist = write_tiny_downstream(tmp_path / "down", n_train=4, n_val=2)
    for mask in (tmp_path / "down" / "masks").rglob("*.png"):
        save_png_atomic(mask, np.zeros((32, 32), np.uint8))
    workflow = make_workflow(bundle_root=BUNDLES / "cxr_seg_adapter", datalist=str(datalist), mode="scratch",
                             encoder_name="densenet_tiny", decoder_channels=[32, 16, 16, 8, 8], image_size=32,
                             batch_size=2, num_workers=0, device="cpu", max_epochs=2, output_dir=str(tmp_path / "out"))
    with pytest.raises(EmptyMasks, match="no training mask of epoch 1"):
        workflow.parser.get_parsed_content("train#trainer").run()
    assert not (tmp_path / "out" / "model.pt").exists() and not (tmp_path / "out" / "checkpoint.pt").exists()
