"""Every bundle's ``initialize``: user errors brief first, then (training bundles) seeding as asked."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
# Every way a bundle is run: a standalone config, or train.json / inference.json with a patch on it.
RUNS = [[config] for config in sorted(BUNDLES.glob("*/configs/*.json"))
        if config.name in ("train.json", "inference.json")] + \
       [[config.parent / ("inference.json" if "inference" in config.name else "train.json"), config]
        for config in sorted(BUNDLES.glob("*/configs/*.json")) if config.name in ("evaluate.json", "multi_gpu_train.json",
                                                                                   "multi_gpu_inference.json")]
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


@pytest.mark.parametrize("patch", [None, "multi_gpu_inference.json"])
@pytest.mark.parametrize(("switch", "flags"), [(None, (True, False)), ("true", (False, True))])
def test_the_labeller_pins_deterministic_cudnn_kernels_unless_asked(patch, switch, flags):
    """Byte-reproducible labels on a GPU need cuDNN's deterministic input-gradient kernels."""
    configs = BUNDLES / "cxr_doll_labeller" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json")] + ([str(configs / patch)] if patch else []))
    if switch is not None:
        parser["cudnn_benchmark"] = switch
    (index,) = [i for i, entry in enumerate(parser["initialize"]) if "seed_run(" in entry]
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


@pytest.mark.parametrize("files", RUNS, ids=lambda files: "+".join(f"{f.parts[-3]}/{f.name}" for f in files))
def test_every_bundle_run_makes_user_errors_brief_first(files):
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    assert parser["initialize"][0] == "$cxrdoll.errors.brief_user_errors()"


def test_monai_bundle_run_ends_a_user_error_with_one_line_naming_the_problem(tmp_path):
    """It used to end 60 lines of traceback with "Failed to evaluate ConfigExpression"."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLES / "cxr_classifier" / "configs" / "train.json"),
           "--bundle_root", str(BUNDLES / "cxr_classifier"), "--dataset_dir", str(tmp_path / "nothing"),
           "--output_dir", str(tmp_path / "out")]
    env = {k: v for k, v in os.environ.items() if k != "CXRDOLL_TRACEBACK"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.rstrip().splitlines()[-2:] == [
        f"error: {tmp_path / 'nothing'}: no classification datalist (looked for datalists/chexpert.json, chexpert.json, "
        "datalist.json)", "(CXRDOLL_TRACEBACK=1 shows the full traceback)"]
    shown = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, "CXRDOLL_TRACEBACK": "1"})
    assert shown.returncode == 1 and "Traceback" in shown.stderr and "no classification datalist" in shown.stderr
