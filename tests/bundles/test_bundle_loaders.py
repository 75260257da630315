"""Every bundle's DataLoaders feed the GPU as the engines expect: pinned for their non-blocking copies,
and the training loaders keep their workers between epochs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
CONFIGS = sorted(BUNDLES.glob("*/configs/*.json"))


def _loaders(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        if str(node.get("_target_", "")).endswith("DataLoader"):
            yield path, node
        for key, value in node.items():
            yield from _loaders(value, f"{path}#{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _loaders(value, f"{path}#{i}")


LOADERS = [(config, path, loader) for config in CONFIGS for path, loader in _loaders(json.loads(config.read_text()))]


def test_every_bundle_has_loaders_to_check():
    assert {config.parts[-3] for config, _, _ in LOADERS} == {"cxr_classifier", "cxr_seg_pretrain", "cxr_seg_adapter"}


@pytest.mark.parametrize(("config", "path", "loader"), LOADERS,
                         ids=[f"{c.parts[-3]}/{c.name}:{p}" for c, p, _ in LOADERS])
def test_loaders_pin_memory_on_cuda_and_training_loaders_keep_their_workers(config, path, loader):
    """Without pinning, a non_blocking copy from pageable memory blocks (the adapter's training loader
    and both inference loaders had none); without persistent workers every epoch starts them again."""
    assert loader.get("pin_memory") == "$torch.cuda.is_available()"
    if path == "train#dataloader":
        assert loader.get("persistent_workers") == "$@num_workers > 0"
