"""Adapters start as identity; each fine-tuning mode trains exactly the parts it names."""

from __future__ import annotations

import pytest
import torch

from cxrdoll.networks import (
    Adapter,
    Segmenter,
    add_adapters,
    build_downstream_segmenter,
    build_segmenter,
    configure_trainable,
    count_trainable_parameters,
    prepare_downstream_segmenter,
    replace_head,
)

SMALL = {"decoder_channels": (32, 16, 16, 8, 8)}


def _trainable_parts(segmenter) -> dict[str, set[bool]]:
    """For each part (encoder / decoder proper / adapter / head): the set of requires_grad flags."""
    parts: dict[str, set[bool]] = {}
    for name, p in segmenter.named_parameters():
        part = "adapter" if ".adapter." in name else name.split(".")[0]
        parts.setdefault(part, set()).add(p.requires_grad)
    return parts


@pytest.mark.parametrize("decoder", ["unet", "psp"])
def test_zero_initialised_adapters_leave_outputs_identical(decoder):
    torch.manual_seed(0)
    segmenter = build_segmenter("densenet_tiny", decoder, psp_channels=16, **SMALL).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        before = segmenter(x)
        names = add_adapters(segmenter)
        after = segmenter(x)
    assert torch.equal(before, after)
    assert len(names) == len(segmenter.decoder.stages)
    modules = dict(segmenter.named_modules())
    assert all(isinstance(modules[name], Adapter) for name in names)  # the names address the new modules
    with pytest.raises(ValueError, match="decoder stage 0 already has an adapter"):
        add_adapters(segmenter)


def test_adapter_is_x_plus_up_of_relu_of_down():
    adapter = Adapter(1, reduction=1, kernel_size=1)
    with torch.no_grad():
        adapter.down.weight.fill_(1.0)
        adapter.up.weight.fill_(2.0)
    x = torch.tensor([-2.0, 3.0]).view(1, 1, 1, 2)
    assert adapter(x).flatten().tolist() == [-2.0, 3.0 + 2 * 3.0]  # the negative input is cut by the ReLU


def test_add_adapters_uses_the_given_reduction_and_kernel():
    segmenter = build_segmenter("densenet_tiny", **SMALL)
    add_adapters(segmenter, reduction=2, kernel_size=5)
    for stage in segmenter.decoder.stages:
        assert stage.adapter.down.kernel_size == (5, 5)
        assert stage.adapter.down.out_channels == stage.out_channels // 2


def test_a_stage_narrower_than_the_reduction_still_gets_a_one_channel_bottleneck():
    """2 // 4 = 0 hidden channels would leave an adapter that can never move off the identity."""
    adapter = Adapter(2, reduction=4)
    assert adapter.down.out_channels == adapter.up.in_channels == 1


def test_adapters_and_a_new_head_take_the_model_s_dtype():
    """A float64 model given float32 adapters or head fails at its first forward (dtype mismatch)."""
    segmenter = build_segmenter("densenet_tiny", **SMALL).double()
    add_adapters(segmenter)
    replace_head(segmenter, 2)
    assert {p.dtype for p in segmenter.parameters()} == {torch.float64}
    assert segmenter(torch.zeros(1, 1, 64, 64, dtype=torch.float64)).dtype == torch.float64


def test_configuring_a_model_already_in_training_puts_its_frozen_parts_in_eval():
    """Without a later train() call: frozen batch norms must not update their statistics."""
    segmenter = build_segmenter("densenet_tiny", **SMALL).train()
    configure_trainable(segmenter, "head")
    assert segmenter.training and segmenter.head.training and not segmenter.encoder.training
    configure_trainable(segmenter, "full")
    assert segmenter.encoder.training


def test_train_keeps_the_dropout_of_a_training_decoder_on_and_the_frozen_encoder_in_eval():
    """Only parts whose every parameter is frozen go to eval: a Dropout has no parameters, and counted
    as frozen it would stop regularising the decoder it belongs to."""
    segmenter = build_segmenter("densenet_tiny", dropout=0.5, **SMALL)
    add_adapters(segmenter)
    configure_trainable(segmenter, "adapters")  # encoder frozen, decoder, adapters and head train
    segmenter.train()
    dropouts = [m for m in segmenter.decoder.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.training for m in dropouts)
    assert not any(m.training for m in segmenter.encoder.modules())
    assert all(m.training for m in segmenter.decoder.modules()) and segmenter.head.training


def test_modes_make_exactly_the_right_parameters_trainable():
    segmenter = build_segmenter("densenet_tiny", **SMALL)
    with pytest.raises(ValueError, match=r"mode 'adapters' needs adapters: call add_adapters\(\) first"):
        configure_trainable(segmenter, "adapters")
    add_adapters(segmenter)
    expected = {
        ("adapters", False): {"encoder": {False}, "decoder": {True}, "adapter": {True}, "head": {True}},
        ("adapters", True): {"encoder": {False}, "decoder": {False}, "adapter": {True}, "head": {True}},
        ("head", False): {"encoder": {False}, "decoder": {False}, "adapter": {False}, "head": {True}},
        ("full", False): {"encoder": {True}, "decoder": {True}, "adapter": {True}, "head": {True}},
        ("scratch", False): {"encoder": {True}, "decoder": {True}, "adapter": {True}, "head": {True}},
    }
    total = sum(p.numel() for p in segmenter.parameters())
    for (mode, freeze_decoder), parts in expected.items():
        count = configure_trainable(segmenter, mode, freeze_decoder=freeze_decoder)
        assert _trainable_parts(segmenter) == parts, mode
        assert count == count_trainable_parameters(segmenter)
        assert count == sum(p.numel() for p in segmenter.parameters() if p.requires_grad)
    assert configure_trainable(segmenter, "full") == total
    head_only = configure_trainable(segmenter, "head")
    assert head_only == sum(p.numel() for p in segmenter.head.parameters())
    modes = r"\['adapters', 'full', 'head', 'scratch'\]"
    with pytest.raises(ValueError, match=rf"unknown mode 'lora'; expected one of {modes}"):
        configure_trainable(segmenter, "lora")


def test_adapter_training_step_leaves_the_frozen_backbone_untouched():
    torch.manual_seed(0)
    segmenter = build_segmenter("densenet_tiny", **SMALL)
    add_adapters(segmenter)
    replace_head(segmenter, 2)
    configure_trainable(segmenter, "adapters", freeze_decoder=True)
    segmenter.train()
    state = segmenter.state_dict()
    frozen = {k: v.clone() for k, v in state.items() if not (".adapter." in k or k.startswith("head."))}
    adapters = {k: v.clone() for k, v in state.items() if ".adapter.up." in k}
    optimizer = torch.optim.SGD([p for p in segmenter.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # the second step moves ``down`` too, once ``up`` is no longer zero
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            segmenter(torch.randn(2, 1, 64, 64)), torch.ones(2, 2, 64, 64)
        )
        loss.backward()
        optimizer.step()
    state = segmenter.state_dict()
    # weights and batch-norm running statistics of the frozen parts are unchanged
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert any(not torch.equal(state[k], v) for k, v in adapters.items())


def test_replace_head_gives_downstream_classes():
    segmenter = build_segmenter("densenet_tiny", out_channels=14, **SMALL)
    replace_head(segmenter, 5)
    assert segmenter(torch.zeros(1, 1, 64, 64)).shape == (1, 5, 64, 64)
    assert segmenter.head.kernel_size == (3, 3)
    one_by_one = Segmenter(segmenter.encoder, segmenter.decoder, 14, head_kernel_size=1)
    assert replace_head(one_by_one, 5).kernel_size == (1, 1)  # the new head is built like the old one


def test_prepare_downstream_segmenter_per_mode(tmp_path):
    torch.manual_seed(3)
    pretrained = build_segmenter("densenet_tiny", out_channels=14, **SMALL)
    ckpt = tmp_path / "doll.pt"
    torch.save(pretrained.state_dict(), ckpt)
    counts = {}
    for mode in ("adapters", "full", "head"):
        model = prepare_downstream_segmenter("densenet_tiny", 2, mode, pretrained_ckpt=ckpt, **SMALL)
        key = "encoder.stages.0.conv0.weight"
        assert torch.equal(model.state_dict()[key], pretrained.state_dict()[key])
        counts[mode] = count_trainable_parameters(model)
    scratch = prepare_downstream_segmenter("densenet_tiny", 2, "scratch", **SMALL)
    assert counts["head"] < counts["adapters"] < counts["full"] == count_trainable_parameters(scratch)
    # the bare structure for inference matches the prepared model's keys
    structure = build_downstream_segmenter("densenet_tiny", 2, "adapters", **SMALL)
    adapted = prepare_downstream_segmenter("densenet_tiny", 2, "adapters", pretrained_ckpt=ckpt, **SMALL)
    assert structure.state_dict().keys() == adapted.state_dict().keys()
    with pytest.raises(ValueError, match="mode 'scratch' trains from random weights; do not pass a checkpoint"):
        prepare_downstream_segmenter("densenet_tiny", 2, "scratch", pretrained_ckpt=ckpt, **SMALL)
    with pytest.raises(ValueError, match=r"mode 'full' needs pretrained_ckpt \(DoLL segmenter\) or classifier_ckpt"):
        prepare_downstream_segmenter("densenet_tiny", 2, "full", **SMALL)
    for mode, freeze_decoder, frozen in (("head", False, "mode 'head'"),
                                         ("adapters", True, "mode 'adapters' with freeze_decoder")):
        with pytest.raises(ValueError, match=f"{frozen} freezes the decoder, so it needs pretrained_ckpt"):
            prepare_downstream_segmenter("densenet_tiny", 2, mode, classifier_ckpt="classifier.pt",
                                         freeze_decoder=freeze_decoder, **SMALL)


@pytest.mark.parametrize("mode", ["head", "adapters"])
def test_a_frozen_efficientnet_backbone_gives_the_same_features_in_training(mode):
    """Its drop-connect (MONAI's rate 0.2) would skip blocks at random in a backbone meant to be fixed."""
    torch.manual_seed(0)
    segmenter = build_segmenter("efficientnet-b0", **SMALL)
    if mode == "adapters":
        add_adapters(segmenter)
    replace_head(segmenter, 2)
    configure_trainable(segmenter, mode, freeze_decoder=True)
    segmenter.train()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        first, second = segmenter.encoder(x), segmenter.encoder(x)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert segmenter.head.training and (mode == "head" or any(
        m.training for name, m in segmenter.named_modules() if name.endswith(".adapter")))


def test_prepare_downstream_segmenter_passes_on_decoder_reduction_and_freeze_decoder(tmp_path):
    """An empty classifier_ckpt (a bundle's unset value) counts as none given."""
    from cxrdoll.networks.decoders import PSPDecoder

    torch.manual_seed(5)
    ckpt = tmp_path / "psp.pt"
    torch.save(build_segmenter("densenet_tiny", "psp", psp_channels=16).state_dict(), ckpt)
    model = prepare_downstream_segmenter("densenet_tiny", 2, "adapters", "psp", pretrained_ckpt=ckpt,
                                         classifier_ckpt="", freeze_decoder=True, adapter_reduction=2,
                                         psp_channels=16)
    assert isinstance(model.decoder, PSPDecoder)
    assert all(stage.adapter.down.out_channels == stage.out_channels // 2 for stage in model.decoder.stages)
    assert _trainable_parts(model) == {"encoder": {False}, "decoder": {False}, "adapter": {True}, "head": {True}}
    with pytest.raises(ValueError, match=r"unknown mode 'lora'; expected one of \['adapters'"):
        build_downstream_segmenter("densenet_tiny", 2, "lora", **SMALL)


def test_the_two_starting_checkpoints_are_refused_together_and_each_in_the_others_place(tmp_path):
    torch.manual_seed(3)
    pretrained = tmp_path / "doll.pt"
    torch.save(build_segmenter("densenet_tiny", out_channels=14, **SMALL).state_dict(), pretrained)
    with pytest.raises(ValueError, match=r"give pretrained_ckpt .* or classifier_ckpt .*, not both"):
        prepare_downstream_segmenter("densenet_tiny", 2, "full", pretrained_ckpt=pretrained, classifier_ckpt=pretrained,
                                     **SMALL)
    with pytest.raises(ValueError, match=r"doll.pt holds a decoder, like a segmentation checkpoint: give it as the "
                                         r"pretrained checkpoint"):
        prepare_downstream_segmenter("densenet_tiny", 2, "full", classifier_ckpt=pretrained, **SMALL)
