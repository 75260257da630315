"""Every training bundle's ``initialize`` seeds through ``seed_run`` and honours ``--cudnn_benchmark``."""

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
LAYERS = [(bundle, patch) for bundle in ("cxr_classifier", "cxr_seg_pretrain", "cxr_seg_adapter")
          for patch in (None, "evaluate.json", "multi_gpu_train.json")
          if patch is None or (BUNDLES / bundle / "configs" / patch).exists()]


@pytest.fixture(autouse=True)
def _restore_cudnn_flags(monkeypatch):
    for name in ("deterministic", "benchmark"):
        monkeypatch.setattr(torch.backends.cudnn, name, getattr(torch.backends.cudnn, name))


@pytest.mark.parametrize(("bundle", "patch"), LAYERS)
@pytest.mark.parametrize(("switch", "flags"), [(None, (True, False)), ("true", (False, True)), ("off", (True, False))])
def test_initialize_seeds_and_sets_cudnn_as_asked(bundle, patch, switch, flags):
    configs = BUNDLES / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json")] + ([str(configs / patch)] if patch else []))
    if switch is not None:
        parser["cudnn_benchmark"] = switch  # what --cudnn_benchmark true on the command line sets
    (index,) = [i for i, entry in enumerate(parser["initialize"]) if "seed_run(@seed," in entry]
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = (not flags[0], not flags[1])
    parser.get_parsed_content(f"initialize#{index}")
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == flags


def test_a_cudnn_benchmark_that_is_not_a_switch_is_named():
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "cxr_classifier" / "configs" / "train.json"))
    parser["cudnn_benchmark"] = "fast"
    (index,) = [i for i, entry in enumerate(parser["initialize"]) if "seed_run(@seed," in entry]
    with pytest.raises(RuntimeError) as failure:  # MONAI wraps the error of a config expression
        parser.get_parsed_content(f"initialize#{index}")
    assert "--cudnn_benchmark 'fast': expected true or false" in str(failure.value.__cause__)
