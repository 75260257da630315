"""SegBundle: the deploy app's bundle runner, with TorchScript or inference.json networks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrdoll.deploy.export import export_seg_bundle, network_data_format
from cxrdoll.deploy.seg_bundle import SegBundle
from cxrdoll.io import write_json_atomic
from tests.deploy.tiny_bundle import NAMES, SIZE, make_tiny_bundle, tiny_network

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((1, h, w), dtype=np.float32)


def _assert_masks_match(masks: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> None:
    """Equal wherever the reference is not within float noise of the threshold (memory layouts differ)."""
    clear = np.abs(probs - threshold) > 1e-5
    np.testing.assert_array_equal(masks[clear], probs[clear] > threshold)
    assert clear.mean() > 0.99


def test_an_exported_bundle_declares_logits_as_the_adapter_bundle_does():
    """model.ts gives logits; a reader of the metadata thresholding them as [0, 1] maps would be wrong."""
    template = json.loads((BUNDLES / "cxr_seg_adapter" / "configs" / "metadata.json").read_text())["network_data_format"]
    names = [template["outputs"]["pred"]["channel_def"][str(i)] for i in range(template["outputs"]["pred"]["num_channels"])]
    exported = network_data_format(names, template["inputs"]["image"]["spatial_shape"][0])
    assert exported["outputs"]["pred"]["format"] == "logits" and exported["outputs"]["pred"]["value_range"] == []
    assert exported == template


def test_predict_matches_the_network_at_its_own_size(tmp_path):
    bundle = SegBundle.load(make_tiny_bundle(tmp_path / "b"))
    assert bundle.channel_names == NAMES and bundle.spatial_shape == (SIZE, SIZE)
    image = _image(SIZE, SIZE)
    masks = bundle.predict(image)
    with torch.no_grad():
        probs = torch.sigmoid(tiny_network()(torch.from_numpy(image)[None]))[0].numpy()
    _assert_masks_match(masks, probs)
    assert 0 < masks.mean() < 1  # a test where every pixel is equal could not fail
    meta = json.loads((bundle.root / "configs" / "metadata.json").read_text())
    assert meta == {"name": "tiny test segmenter", "version": "0.1.0", "network_data_format": network_data_format(NAMES, SIZE)}


def test_a_pixel_exactly_at_the_threshold_is_not_in_the_mask(tmp_path):
    """sigmoid > threshold, as the contract says: logits of exactly 0 give 0.5, which 0.5 leaves out."""
    zero = torch.nn.Conv2d(1, len(NAMES), 1)
    torch.nn.init.zeros_(zero.weight)
    torch.nn.init.zeros_(zero.bias)
    bundle = SegBundle.load(export_seg_bundle(zero, tmp_path / "b", NAMES, SIZE))
    assert not bundle.predict(_image(SIZE, SIZE), threshold=0.5).any()
    assert bundle.predict(_image(SIZE, SIZE), threshold=0.49).all()


def test_channel_names_follow_the_channel_def_keys_not_their_order_in_the_file(tmp_path):
    """A hand-edited metadata.json may list channel_def as {"2": ..., "1": ..., "0": ...}: read in file
    order, the app would write each class's mask under another class's name in the DICOM SEG."""
    root = make_tiny_bundle(tmp_path / "b")
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {k: channel_def[k] for k in ("2", "0", "1")}
    write_json_atomic(meta_path, meta)
    assert list(json.loads(meta_path.read_text())["network_data_format"]["outputs"]["pred"]["channel_def"]) == ["2", "0", "1"]
    assert SegBundle.load(root).channel_names == NAMES


def test_warm_up_runs_the_network_at_its_input_size_and_changes_nothing(tmp_path):
    bundle = SegBundle.load(make_tiny_bundle(tmp_path / "b"))
    image = _image(SIZE, SIZE)
    before = bundle.predict(image)
    network, shapes = bundle.network, []
    bundle.network = lambda x: shapes.append(tuple(x.shape)) or network(x)
    bundle.warm_up(passes=2)
    assert shapes == [(1, 1, SIZE, SIZE)] * 2
    bundle.network = network
    assert (bundle.predict(image) == before).all()


def test_predict_resizes_in_and_out(tmp_path):
    bundle = SegBundle.load(make_tiny_bundle(tmp_path / "b"))
    image = _image(100, 80)
    masks = bundle.predict(image, threshold=0.5)
    x = torch.nn.functional.interpolate(torch.from_numpy(image)[None], size=(SIZE, SIZE), mode="area")
    with torch.no_grad():
        probs = torch.sigmoid(tiny_network()(x))
    probs = torch.nn.functional.interpolate(probs, size=(100, 80), mode="bilinear", align_corners=False)
    assert masks.shape == (len(NAMES), 100, 80) and masks.dtype == bool
    _assert_masks_match(masks, probs[0].numpy())
    assert bundle.predict(image, threshold=1.0).sum() == 0


def test_predict_refuses_pixels_outside_the_unit_range(tmp_path):
    """8-bit pixels (a PNG read with PIL) were run as 0..255 and gave masks without an error."""
    bundle = SegBundle.load(make_tiny_bundle(tmp_path / "b"))
    image = _image(40, 30)
    with pytest.raises(ValueError, match=r"expected a float image in \[0, 1\], got uint8 pixels; .*unit_range"):
        bundle.predict(np.rint(image * 255).astype(np.uint8))
    scaled = image * 255
    scaled[0, 0, :2] = 0.0, 255.0
    with pytest.raises(ValueError, match=r"expected a float image in \[0, 1\], got values in \[0, 255\]"):
        bundle.predict(scaled)
    with pytest.raises(ValueError, match=r"^expected a \(1, H, W\) image, got shape \(2, 40, 30\)$"):
        bundle.predict(np.concatenate([image, image]))
    assert (bundle.predict(torch.from_numpy(image)) == bundle.predict(image)).all()


def test_inference_json_network_def_with_checkpoint(tmp_path):
    """Without model.ts: network_def of inference.json + models/model.pt, names from class_names."""
    root = tmp_path / "cfg"
    (root / "models").mkdir(parents=True)
    torch.save({"model": tiny_network().state_dict()}, root / "models" / "model.pt")
    write_json_atomic(root / "configs" / "inference.json", {
        "class_names": NAMES,
        "image_size": SIZE,
        "network_def": {"_target_": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": 1,
                        "out_channels": "$len(@class_names)", "channels": [4, 8], "strides": [2], "num_res_units": 0},
    })
    from_config = SegBundle.load(root)
    from_torchscript = SegBundle.load(make_tiny_bundle(tmp_path / "ts"))
    assert from_config.channel_names == NAMES and from_config.spatial_shape == (SIZE, SIZE)
    assert not from_config.network.training  # network_def builds it in training mode: batch norm, dropout
    image = _image(90, 90)
    np.testing.assert_array_equal(from_config.predict(image), from_torchscript.predict(image))


def test_the_training_record_beside_the_checkpoint_describes_the_network_not_the_template_metadata(tmp_path, caplog):
    """A bundle trained in place keeps the shipped metadata (5 SCR structures, 320 px) until it is exported."""
    root = make_tiny_bundle(tmp_path / "b")
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "left lung", "1": "right lung", "2": "heart"}
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = [320, 320]
    write_json_atomic(meta_path, meta)
    assert SegBundle.load(root).channel_names == ["left lung", "right lung", "heart"]  # no record: what it declares
    torch.save(tiny_network().state_dict(), root / "models" / "model.pt")
    write_json_atomic(root / "models" / "validation_history.json",  # what cxr_seg_adapter's training writes
                      {"class_names": NAMES, "image_size": SIZE, "mode": "adapters", "history": []})
    with caplog.at_level("WARNING", logger="cxrdoll.deploy.seg_bundle"):
        scripted = SegBundle.load(root)  # model.ts exported from that checkpoint (monai.bundle ckpt_export)
    assert scripted.channel_names == NAMES and scripted.spatial_shape == (SIZE, SIZE)
    assert (f"configs/metadata.json declares ['left lung', 'right lung', 'heart'] at 320x320 px, but models/model.pt "
            f"was trained for {NAMES} at {SIZE}x{SIZE} px") in caplog.text
    write_json_atomic(root / "models" / "validation_history.json", {"class_names": NAMES[:2], "image_size": SIZE})
    with pytest.raises(ValueError, match=r"gave shape \(1, 3, 64, 64\); the training record beside models/model.pt "
                                         r"declares 2 channels"):  # model.ts left from an earlier export
        SegBundle.load(root).predict(_image(SIZE, SIZE))
    write_json_atomic(root / "models" / "validation_history.json", {"class_names": NAMES, "image_size": SIZE})
    (root / "models" / "model.ts").unlink()
    write_json_atomic(root / "configs" / "inference.json", {"class_names": ["a", "b", "c"], "image_size": 96, "network_def": {
        "_target_": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3,
        "channels": [4, 8], "strides": [2], "num_res_units": 0}})
    from_checkpoint = SegBundle.load(root)
    assert from_checkpoint.channel_names == NAMES and from_checkpoint.spatial_shape == (SIZE, SIZE)


def test_bundle_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: bundle folder not found"):
        SegBundle.load(tmp_path / "nowhere")
    (tmp_path / "model.ts").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="model.ts: bundle folder not found"):
        SegBundle.load(tmp_path / "model.ts")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no network_data_format in configs/metadata.json and no image_size/class_names"):
        SegBundle.load(tmp_path / "empty")
    root = make_tiny_bundle(tmp_path / "b")
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "heart", "1": "lung"}
    write_json_atomic(root / "configs" / "metadata.json", meta)
    with pytest.raises(ValueError, match=r"network gave shape \(1, 3, 64, 64\); configs/metadata.json declares 2 channels"):
        SegBundle.load(root).predict(_image(SIZE, SIZE))
    (root / "models" / "model.ts").unlink()
    with pytest.raises(FileNotFoundError, match="needs models/model.ts, or configs/inference.json with models/model.pt"):
        SegBundle.load(root)


def _metadata_only(root: Path, image: dict | None = None) -> Path:
    """A bundle folder holding only ``configs/metadata.json``: the tiny bundle's, ``image`` updating its input."""
    fmt = network_data_format(NAMES, SIZE)
    fmt["inputs"]["image"].update(image or {})
    write_json_atomic(root / "configs" / "metadata.json", {"network_data_format": fmt})
    return root


@pytest.mark.parametrize("image, problem", [
    ({"num_channels": 3}, "expected a 1-channel 2-D input"),
    ({"spatial_shape": [SIZE, SIZE, 1]}, "expected a 1-channel 2-D input"),
    ({"spatial_shape": ["a", SIZE]}, "network_data_format needs inputs.image.spatial_shape and outputs.pred.channel_def "
                                     "with keys '0'..'N-1' (ValueError: "),
], ids=["3-channels", "3-D", "not-a-number"])
def test_an_input_the_app_cannot_feed_is_refused_naming_the_metadata(tmp_path, image, problem):
    root = _metadata_only(tmp_path / "b", image)
    with pytest.raises(ValueError) as caught:
        SegBundle.load(root)
    assert str(caught.value).startswith(f"{root / 'configs' / 'metadata.json'}: {problem}")


def test_a_non_square_input_is_height_then_width(tmp_path):
    root = make_tiny_bundle(tmp_path / "b")
    _metadata_only(root, {"spatial_shape": [SIZE, SIZE // 2]})
    bundle = SegBundle.load(root)
    assert bundle.spatial_shape == (SIZE, SIZE // 2)
    assert bundle.predict(_image(90, 70)).shape == (len(NAMES), 90, 70)


def test_incomplete_inference_configs_and_training_records_are_not_used(tmp_path):
    """A training record or inference.json lacking one of image_size and class_names does not describe the
    network; inference.json without models/model.pt has no weights to run."""
    root = tmp_path / "b"
    write_json_atomic(root / "configs" / "inference.json", {"class_names": NAMES})
    with pytest.raises(ValueError, match="no network_data_format in configs/metadata.json and no image_size/class_names"):
        SegBundle.load(root)
    write_json_atomic(root / "configs" / "inference.json", {"class_names": NAMES, "image_size": SIZE, "network_def": {
        "_target_": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3,
        "channels": [4, 8], "strides": [2], "num_res_units": 0}})
    with pytest.raises(FileNotFoundError, match="needs models/model.ts, or configs/inference.json with models/model.pt"):
        SegBundle.load(root)
    make_tiny_bundle(root)
    write_json_atomic(root / "models" / "validation_history.json", {"image_size": 96})
    bundle = SegBundle.load(root)
    assert (bundle.spatial_shape, bundle.channel_names, bundle.described_by) == ((SIZE, SIZE), NAMES, "configs/metadata.json")


def test_a_classifier_bundle_is_refused_as_one(tmp_path):
    root = tmp_path / "classifier"
    shutil.copytree(Path(__file__).resolve().parents[2] / "bundles" / "cxr_classifier" / "configs", root / "configs")
    with pytest.raises(ValueError) as err:
        SegBundle.load(root)
    assert str(err.value) == (f"{root / 'configs' / 'metadata.json'}: outputs.pred is one score per class for the whole "
                              "image (format 'classes'), a classifier's; the app runs segmentation bundles, which give "
                              "one map per class")


def test_unreadable_torchscript_names_the_file_and_the_problem(tmp_path):
    root = make_tiny_bundle(tmp_path / "b")
    model = root / "models" / "model.ts"
    good = model.read_bytes()
    for data, problem in [
        (good[:3000], "the file is truncated (its zip directory is missing)"),
        (b"", "the file is empty"),
        (b"not a model", "not a TorchScript file (not a zip archive)"),
    ]:
        model.write_bytes(data)
        with pytest.raises(ValueError) as caught:
            SegBundle.load(root)
        assert str(caught.value) == f"{model}: cannot load as a TorchScript model: {problem}"
    torch.save(tiny_network().state_dict(), model)
    with pytest.raises(ValueError, match="model.ts: cannot load as a TorchScript model: not a TorchScript model"):
        SegBundle.load(root)


def test_an_exported_bundle_runs_at_other_sizes_and_leaves_the_network_alone(tmp_path):
    """export_seg_bundle scripts: a trace froze the PSP decoder's sizes (it failed at 96 px after a
    64 px export) and dropped the U-Net's size check."""
    from cxrdoll.networks import build_segmenter

    torch.manual_seed(0)
    for decoder, options in (("psp", {"psp_channels": 16}), ("unet", {"decoder_channels": (16, 16, 8, 8, 8)})):
        network = build_segmenter("densenet_tiny", decoder, out_channels=2, **options).train()
        root = export_seg_bundle(network, tmp_path / decoder, ["a", "b"], 64)
        assert network.training  # the caller's model keeps its mode
        loaded = torch.jit.load(str(root / "models" / "model.ts"))
        network.eval()
        for size in (64, 96):
            x = torch.randn(1, 1, size, size)
            with torch.no_grad():
                torch.testing.assert_close(loaded(x), network(x))
        with pytest.raises(torch.jit.Error, match="input size 100x100 is not divisible by 32"):
            loaded(torch.zeros(1, 1, 100, 100))
