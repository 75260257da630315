"""Initialising segmenters: encoder-only from a classifier, or whole from a DoLL segmenter checkpoint."""

from __future__ import annotations

import pytest
import torch

from cxrdoll.networks import (
    add_adapters,
    build_classifier,
    build_segmenter,
    init_encoder_from_classifier,
    load_network_weights,
    load_segmenter_checkpoint,
    load_state_dict_file,
)

SMALL = {"decoder_channels": (32, 16, 16, 8, 8)}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_classifier_checkpoint_changes_exactly_the_encoder(tmp_path):
    torch.manual_seed(0)
    classifier = build_classifier("densenet_tiny")
    ckpt = tmp_path / "model.pt"
    torch.save(classifier.state_dict(), ckpt)
    segmenter = build_segmenter("densenet_tiny", **SMALL)
    before = _snapshot(segmenter)

    report = init_encoder_from_classifier(segmenter, ckpt)

    after = segmenter.state_dict()
    source = classifier.state_dict()
    for key, value in after.items():
        if key.startswith("encoder."):
            assert torch.equal(value, source[key]), key
        else:
            assert torch.equal(value, before[key]), key
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("encoder.") for k in changed)
    assert sorted(report.loaded) == sorted(k for k in source if k.startswith("encoder."))
    assert report.ignored == ["head.fc.bias", "head.fc.weight"]


def test_a_resume_checkpoint_initialises_the_encoder_from_its_network_entry(tmp_path):
    """The training bundles' resume file nests the weights under "network", beside the optimizer's and
    the trainer's state; given as the classifier checkpoint it is read as the plain state_dict."""
    torch.manual_seed(3)
    classifier = build_classifier("densenet_tiny")
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"network": classifier.state_dict(), "trainer": {"epoch": 3, "iteration": 30},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, ckpt)
    segmenter = build_segmenter("densenet_tiny", **SMALL)
    report = init_encoder_from_classifier(segmenter, ckpt)
    assert sorted(report.loaded) == sorted(k for k in classifier.state_dict() if k.startswith("encoder."))
    for key, value in segmenter.encoder.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[f"encoder.{key}"]), key


def test_classifier_of_another_architecture_is_refused_with_the_keys(tmp_path):
    ckpt = tmp_path / "resnet10.pt"
    torch.save(build_classifier("resnet10").state_dict(), ckpt)
    segmenter = build_segmenter("densenet_tiny", **SMALL)
    before = _snapshot(segmenter)
    with pytest.raises(ValueError, match=r"resnet10\.pt \(encoder part\) does not match the model: \d+ missing keys"):
        init_encoder_from_classifier(segmenter, ckpt)
    assert all(torch.equal(v, before[k]) for k, v in segmenter.state_dict().items())


def test_a_mismatch_names_the_run_s_network(tmp_path):
    """The segmentation paths name the encoder (and decoder) the run built, as the classifier path does."""
    from cxrdoll.engines.seg_network import pretraining_segmenter
    from cxrdoll.networks import prepare_downstream_segmenter

    classifier = tmp_path / "resnet10.pt"
    torch.save(build_classifier("resnet10").state_dict(), classifier)
    with pytest.raises(ValueError, match=r"resnet10\.pt \(encoder part\) does not match the model \(densenet_tiny "
                                         r"encoder\): \d+ missing keys \(e\.g\. \['encoder\.stages"):
        pretraining_segmenter("densenet_tiny", init_ckpt=classifier, **SMALL)
    segmenter = tmp_path / "doll.pt"
    torch.save(build_segmenter("resnet10", **SMALL).state_dict(), segmenter)
    with pytest.raises(ValueError, match=r"doll\.pt does not match the model \(densenet_tiny unet\): "):
        prepare_downstream_segmenter("densenet_tiny", 2, "adapters", pretrained_ckpt=segmenter, **SMALL)


def test_the_pretraining_segmenter_has_one_output_per_observation_on_the_chosen_decoder():
    from cxrdoll.constants import OBSERVATIONS
    from cxrdoll.engines.seg_network import pretraining_segmenter
    from cxrdoll.networks.decoders import PSPDecoder

    model = pretraining_segmenter("densenet_tiny", "psp", psp_channels=16)
    assert isinstance(model.decoder, PSPDecoder) and model.head.out_channels == len(OBSERVATIONS) == 14


def test_shape_mismatch_is_reported():
    classifier = build_classifier("densenet_tiny", in_channels=3)
    segmenter = build_segmenter("densenet_tiny", **SMALL)
    expected = (
        r"1 shape mismatches \(e\.g\. \['encoder\.stages\.0\.conv0\.weight: "
        r"checkpoint \(16, 3, 7, 7\) vs model \(16, 1, 7, 7\)"
    )
    with pytest.raises(ValueError, match=expected):
        init_encoder_from_classifier(segmenter, classifier.state_dict())


def test_full_segmenter_checkpoint_round_trip_reproduces_outputs(tmp_path):
    torch.manual_seed(1)
    source = build_segmenter("densenet_tiny", "psp", psp_channels=16).eval()
    ckpt = tmp_path / "doll.pt"
    torch.save({"model": source.state_dict()}, ckpt)  # nested, as Ignite checkpoint handlers write it
    target = build_segmenter("densenet_tiny", "psp", psp_channels=16).eval()
    report = load_segmenter_checkpoint(target, ckpt)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))
    assert report.loaded == sorted(source.state_dict())


def test_pretrained_checkpoint_loads_under_new_head_and_fresh_adapters():
    torch.manual_seed(2)
    source = build_segmenter("densenet_tiny", out_channels=14, **SMALL)
    target = build_segmenter("densenet_tiny", out_channels=2, **SMALL)
    add_adapters(target)
    head_before = _snapshot(target.head)
    adapters_before = {k: v.clone() for k, v in target.state_dict().items() if ".adapter." in k}
    report = load_segmenter_checkpoint(target, source.state_dict(), head=False)
    state = target.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(state[key], value), key
    assert all(torch.equal(v, head_before[k]) for k, v in target.head.state_dict().items())
    assert all(torch.equal(state[k], v) for k, v in adapters_before.items())
    assert report.ignored == ["head.bias", "head.weight"]


def test_an_adapter_checkpoint_loads_its_trained_adapters_into_a_model_with_adapters():
    """A fine-tuned adapter segmenter given as the pretrained checkpoint: its adapters are weights to
    keep, not the zero initialisation a DoLL checkpoint leaves in place."""
    torch.manual_seed(4)
    source = build_segmenter("densenet_tiny", out_channels=2, **SMALL)
    add_adapters(source)
    with torch.no_grad():
        for key, value in source.state_dict().items():
            if ".adapter." in key:
                value.normal_()
    target = build_segmenter("densenet_tiny", out_channels=2, **SMALL)
    add_adapters(target)
    report = load_segmenter_checkpoint(target, source.state_dict())
    assert report.loaded == sorted(source.state_dict())
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_adapter_checkpoint_needs_adapters_in_the_model():
    with_adapters = build_segmenter("densenet_tiny", **SMALL)
    add_adapters(with_adapters)
    plain = build_segmenter("densenet_tiny", **SMALL)
    with pytest.raises(ValueError, match=r"checkpoint holds adapter weights: call add_adapters\(\) on the model"):
        load_segmenter_checkpoint(plain, with_adapters.state_dict())


def test_a_classifier_checkpoint_given_as_a_segmenter_is_named_as_such(tmp_path):
    """Before, the error listed 70 missing decoder keys and left the user to guess why."""
    ckpt = tmp_path / "model.pt"
    torch.save(build_classifier("densenet_tiny").state_dict(), ckpt)
    with pytest.raises(ValueError) as err:
        load_segmenter_checkpoint(build_segmenter("densenet_tiny", **SMALL), ckpt, head=False)
    assert str(err.value) == (f"{ckpt} holds an encoder but no decoder, like a cxr_classifier checkpoint: give it as "
                              "the classifier checkpoint (init_ckpt: the encoder alone), or give a segmentation "
                              "checkpoint here")


def test_bad_checkpoint_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.pt"):
        load_state_dict_file(tmp_path / "missing.pt")
    not_tensors = tmp_path / "meta.pt"
    torch.save({"epoch": 3}, not_tensors)
    with pytest.raises(ValueError, match=r"meta\.pt: not a state_dict of tensors"):
        load_state_dict_file(not_tensors)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt: cannot load as a checkpoint: not a PyTorch weights file") as err:
        load_state_dict_file(garbage)
    assert "weights_only` set to `False`" not in str(err.value)  # torch's advice would run code from the file
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt: cannot load as a checkpoint: the file is empty"):
        load_state_dict_file(empty)
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.ones(100)}, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.pt: cannot load as a checkpoint: the file is truncated"):
        load_state_dict_file(truncated)
    legacy = tmp_path / "legacy.pt"  # torch's pre-1.6 pickle format, cut short: a bare EOFError
    torch.save({"w": torch.ones(100)}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"legacy\.pt: cannot load as a checkpoint: the file is truncated"):
        load_state_dict_file(legacy)


def test_weights_of_another_architecture_fail_in_one_line_naming_the_model(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": build_classifier("resnet10").state_dict()}, path)
    with pytest.raises(ValueError, match=r"model\.pt does not match the model \(densenet_tiny\): \d+ missing keys") as err:
        load_network_weights(build_classifier("densenet_tiny"), path, model_name="densenet_tiny")
    assert len(str(err.value).splitlines()) == 1 and len(str(err.value)) < 1000
    same = build_classifier("resnet10")
    load_network_weights(same, path)  # nested under "model", as training saves it
    torch.testing.assert_close(same.state_dict(), torch.load(path, weights_only=True)["model"])


def test_a_mismatch_tells_missing_keys_from_unexpected_ones():
    """The model's keys absent from the checkpoint are "missing", the checkpoint's extra ones "unexpected"."""
    net = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError) as err:
        load_network_weights(net, {"weight": torch.zeros(1, 2), "scale": torch.ones(1)})
    assert str(err.value) == ("checkpoint does not match the model: 1 missing keys (e.g. ['bias']); "
                              "1 unexpected keys (e.g. ['scale'])")
