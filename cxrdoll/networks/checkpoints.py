"""Loading weights into segmenters: encoder-only from a classifier, or a whole DoLL segmenter.

Every load goes through ``torch.load(..., weights_only=True)`` and checks key coverage explicitly,
so a checkpoint of the wrong architecture fails loudly instead of leaving layers random.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]
CheckpointLike = Union[str, os.PathLike, StateDict]
# Keys under which MONAI/Ignite checkpoint handlers nest the network's state_dict.
_WRAPPER_KEYS = ("model", "network")
_SHOWN = 5  # keys listed per problem in error messages


@dataclass
class LoadReport:
    """What a load did: keys copied, keys of the checkpoint left out on purpose."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def load_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, failing with the file and what is wrong with it.

    torch's own message for a corrupt file advises ``weights_only=False``, which would run code
    from the file: the wrong advice for a damaged or foreign checkpoint, so it is not passed on.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt, truncated or unsafe files
        raise ValueError(f"{path}: cannot load as a checkpoint: {load_problem(path, err)}") from None


def load_problem(path: Path, err: Exception) -> str:
    """What is wrong with a torch file that ``torch.load`` or ``torch.jit.load`` refused, in words:
    torch's own messages advise unsafe loading or name neither the file nor the cause."""
    text = str(err)
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(err, EOFError) or "central directory" in text:
        return "the file is truncated (its zip directory is missing)"
    if "not a ZIP archive" in text:
        return "not a TorchScript file (not a zip archive)"
    if "constants.pkl" in text:
        return "not a TorchScript model (a torch.save checkpoint? export it with torch.jit.save)"
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0].strip()
        return (f"not a PyTorch weights file, or one holding objects other than tensors and plain containers "
                f"({detail})")
    return f"{type(err).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def load_state_dict_file(source: CheckpointLike) -> dict[str, torch.Tensor]:
    """A state_dict from a path (plain or nested under "model"/"network") or from a mapping."""
    name = "state_dict"
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        source = load_checkpoint_file(source)
    if isinstance(source, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(source.get(key), Mapping):
                source = source[key]
                break
    if not isinstance(source, Mapping) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise ValueError(f"{name}: not a state_dict of tensors")
    return dict(source)


def check_state_dict(name: str, expected: StateDict, given: StateDict, model: str = "") -> None:
    """Raise one readable error listing missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(given)
        if given[k].shape != expected[k].shape
    )
    problems = [
        f"{len(items)} {label} (e.g. {items[:_SHOWN]})"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if items
    ]
    if problems:
        raise ValueError(f"{name} does not match the model{model}: " + "; ".join(problems))


def load_network_weights(network: nn.Module, source: CheckpointLike, model_name: str = "") -> None:
    """Load a whole network's trained weights; a checkpoint of another architecture fails in one readable line.

    ``model_name`` (e.g. the ``--network_name`` of the run) goes into the message, since that is
    usually what differs from the run that wrote the checkpoint.
    """
    state = load_state_dict_file(source)
    model = f" ({model_name})" if model_name else ""
    check_state_dict(_source_name(source), network.state_dict(), state, model)
    network.load_state_dict(state)


def _source_name(source: CheckpointLike) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "checkpoint"


def init_encoder_from_classifier(segmenter: nn.Module, checkpoint: CheckpointLike, model_name: str = "") -> LoadReport:
    """Copy a classifier checkpoint's ``encoder.*`` weights into ``segmenter.encoder`` (backbone-only init).

    Every encoder key must be present with the right shape; the classifier head is reported as ignored.
    A segmentation checkpoint is refused: its decoder would be dropped without a word. ``model_name``
    (the run's encoder) goes into a mismatch message, as in :func:`load_network_weights`.
    """
    state = load_state_dict_file(checkpoint)
    if any(k.startswith("decoder.") for k in state):
        raise ValueError(f"{_source_name(checkpoint)} holds a decoder, like a segmentation checkpoint: give it as the "
                         "pretrained checkpoint (pretrained_ckpt: encoder and decoder), or give a classifier here")
    given = {k: v for k, v in state.items() if k.startswith("encoder.")}
    target = {f"encoder.{k}": v for k, v in segmenter.encoder.state_dict().items()}
    check_state_dict(f"{_source_name(checkpoint)} (encoder part)", target, given,
                     f" ({model_name})" if model_name else "")
    segmenter.encoder.load_state_dict({k[len("encoder."):]: v for k, v in given.items()}, strict=True)
    return LoadReport(loaded=list(given), ignored=sorted(k for k in state if not k.startswith("encoder.")))


def load_segmenter_checkpoint(segmenter: nn.Module, checkpoint: CheckpointLike, head: bool = True,
                              model_name: str = "") -> LoadReport:
    """Load a full segmenter checkpoint: encoder, decoder and, unless ``head=False``, the head.

    ``head=False`` keeps the model's (downstream) head and reports the checkpoint's as ignored.
    Adapters the model has but the checkpoint lacks keep their zero initialisation (a DoLL
    pre-trained checkpoint has none); the reverse is an error, since their weights would be lost.
    ``model_name`` (the run's encoder and decoder) goes into a mismatch message.
    """
    state = load_state_dict_file(checkpoint)
    name = _source_name(checkpoint)
    target = segmenter.state_dict()
    model_adapters = any(_is_adapter_key(k) for k in target)
    if any(_is_adapter_key(k) for k in state) and not model_adapters:
        raise ValueError(f"{name} holds adapter weights: call add_adapters() on the model before loading it")
    if any(k.startswith("encoder.") for k in state) and not any(k.startswith("decoder.") for k in state):
        raise ValueError(f"{name} holds an encoder but no decoder, like a cxr_classifier checkpoint: give it as the "
                         "classifier checkpoint (init_ckpt: the encoder alone), or give a segmentation checkpoint here")
    ignored = sorted(k for k in state if k.startswith("head.")) if not head else []
    state = {k: v for k, v in state.items() if k not in ignored}
    keep_initial = not any(_is_adapter_key(k) for k in state)
    target = {
        k: v
        for k, v in target.items()
        if (head or not k.startswith("head.")) and not (keep_initial and _is_adapter_key(k))
    }
    check_state_dict(name, target, state, f" ({model_name})" if model_name else "")
    segmenter.load_state_dict(state, strict=False)
    return LoadReport(loaded=sorted(state), ignored=ignored)


def _is_adapter_key(key: str) -> bool:
    return ".adapter." in key
