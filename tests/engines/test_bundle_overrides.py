"""Command-line bundle overrides (``sweep-classifiers --set``, ``train_throughput.py --override``)."""

from __future__ import annotations

import json
from pathlib import Path

import monai
import pytest

from cxrdoll.engines.bundle_run import command_line_overrides, parse_overrides, refuse_misspelt_overrides


def test_overrides_parse_json_values_and_keep_expressions_as_strings():
    assert parse_overrides(["train#dataloader#pin_memory=false", "batch_size=8",
                            "train#trainer#train_handlers=$@train#handlers[:-3]"]) == {
        "train#dataloader#pin_memory": False, "batch_size": 8,
        "train#trainer#train_handlers": "$@train#handlers[:-3]"}
    with pytest.raises(ValueError, match="'pin_memory': expected ID=VALUE"):
        parse_overrides(["pin_memory"])
    with pytest.raises(ValueError, match="'=0.5': expected ID=VALUE"):  # no id: not an override of ''
        parse_overrides(["=0.5"])


BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
MONAI_MAIN = str(Path(monai.__file__).parent / "bundle" / "__main__.py")


def test_a_misspelt_override_of_monai_bundle_run_is_refused_naming_it():
    train = str(BUNDLES / "cxr_classifier" / "configs" / "train.json")
    with pytest.raises(KeyError, match=r"\['lerning_rate'\] not defined in .*train.json: check the spelling"):
        refuse_misspelt_overrides([MONAI_MAIN, "run", "--config_file", train, "--lerning_rate", "0.5"])
    evaluate = str(BUNDLES / "cxr_classifier" / "configs" / "evaluate.json")
    with pytest.raises(KeyError, match=r"\['train#augmentation'\]"):  # nested, and two configs as a list
        refuse_misspelt_overrides([MONAI_MAIN, "run", f"--config_file=['{train}','{evaluate}']",
                                   "--train#augmentation", "[]", "--amp"])
    refuse_misspelt_overrides([MONAI_MAIN, "run", "--config_file", f"{train},{evaluate}", "--train#augmentations",
                               "[]", "--amp", "--learning_rate=0.5", "--logging-file", "x.conf", "--meta_file", "m"])
    refuse_misspelt_overrides(["pytest", "run", "--config_file", train, "--lerning_rate", "0.5"])  # not monai.bundle


def test_overrides_in_an_args_file_are_checked_too(tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": str(BUNDLES / "cxr_seg_pretrain" / "configs" / "train.json"),
                                "encoder": "densenet121"}))
    assert command_line_overrides([MONAI_MAIN, "run", "--args_file", str(args), "--max_epochs", "2"])[1] == [
        "encoder", "max_epochs"]
    with pytest.raises(KeyError, match=r"\['encoder'\]"):
        refuse_misspelt_overrides([MONAI_MAIN, "run", "--args_file", str(args)])


def test_every_bundle_checks_its_command_line_first():
    for config in sorted(BUNDLES.glob("*/configs/*.json")):
        doc = json.loads(config.read_text())
        if "initialize" in doc:
            assert doc["initialize"][:2] == ["$cxrdoll.errors.brief_user_errors()",
                                             "$cxrdoll.engines.bundle_run.refuse_misspelt_overrides()"], config


def test_what_monai_and_fire_accept_is_not_refused():
    """A component's keywords, an empty options dict's keys, hyphens, the workflow's own arguments,
    metadata ids and a tuple of configs all run under ``monai.bundle run``."""
    train = str(BUNDLES / "cxr_classifier" / "configs" / "train.json")
    labeller = str(BUNDLES / "cxr_doll_labeller" / "configs" / "inference.json")
    refuse_misspelt_overrides([MONAI_MAIN, "run", "--config_file", train, "--train#trainer#epoch_length", "50",
                               "--train#dataloader#prefetch_factor", "4", "--learning-rate", "0.5",
                               "--workflow_type", "train", "--_meta_#version", "9"])
    refuse_misspelt_overrides([MONAI_MAIN, "run", "--config_file", f"('{labeller}',)",
                               "--explainer_options#gradcam#target_layer", "features.denseblock4"])
    with pytest.raises(KeyError, match=r"\['ig_options#step'\]"):  # a full dict of options: a new key is a typo
        refuse_misspelt_overrides([MONAI_MAIN, "run", "--config_file", labeller, "--ig_options#step", "4"])


def test_only_the_options_of_monai_bundle_run_itself_are_not_overrides():
    """A bare flag takes no value, a positional run_id is no override, and every argument of MONAI's ``run``
    and of its ConfigWorkflow (read from their signatures; the args file is tested above) is the workflow's own,
    not a config id."""
    import inspect

    from monai.bundle import ConfigWorkflow
    from monai.bundle.scripts import run

    train = str(BUNDLES / "cxr_classifier" / "configs" / "train.json")
    with pytest.raises(KeyError, match=r"\['lerning_rate'\]"):  # not taken as the flag's value
        refuse_misspelt_overrides([MONAI_MAIN, "run", "--config_file", train, "--amp", "--lerning_rate=0.5"])
    own = [name for fn in (run, ConfigWorkflow.__init__) for name, p in inspect.signature(fn).parameters.items()
           if name not in ("self", "config_file", "args_file") and p.kind is not p.VAR_KEYWORD]
    assert "tracking" in own and "init_id" in own
    argv = [MONAI_MAIN, "run", "training", "--config_file", train, *(a for name in own for a in (f"--{name}", "x"))]
    assert command_line_overrides([*argv, "--amp"]) == (train, ["amp"])


def test_other_command_lines_are_not_checked():
    """Only ``monai.bundle run`` takes config overrides: ``ckpt_export --net_id`` is its own argument, and
    another module's ``__main__.py run`` is not MONAI's."""
    train = str(BUNDLES / "cxr_classifier" / "configs" / "train.json")
    for argv in ([MONAI_MAIN, "ckpt_export", "--config_file", train, "--net_id", "network_def"],
                 [str(Path(pytest.__file__).parent / "__main__.py"), "run", "--config_file", train, "--x", "1"]):
        assert command_line_overrides(argv) is None
        refuse_misspelt_overrides(argv)


def test_metadata_ids_at_any_depth_are_monais_own():
    """The metadata file is merged by MONAI after the configs this check reads."""
    train = str(BUNDLES / "cxr_classifier" / "configs" / "train.json")
    refuse_misspelt_overrides([MONAI_MAIN, "run", "--config_file", train,
                               "--_meta_#network_data_format#inputs#image#num_channels", "1"])


def test_make_workflow_names_a_missing_config_and_a_misspelt_override_before_building_anything(tmp_path):
    from cxrdoll.engines.bundle_run import make_workflow

    root = BUNDLES / "cxr_classifier"
    with pytest.raises(FileNotFoundError, match=rf"{root}: bundle config\(s\) not found: .*trian.json$"):
        make_workflow(root, ("train.json", "trian.json"), output_dir=str(tmp_path / "o"))
    with pytest.raises(KeyError, match=r"\['lerning_rate'\] not defined in .*train.json"):
        make_workflow(root, ("train.json",), lerning_rate=0.1, output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
