"""Bundle switches from the command line: ``--resume false`` must mean False (fire passes the string)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from cxrdoll.engines.flags import flag

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (1, True), (0, False),
    ("false", False), ("False", False), ("FALSE", False), ("no", False), ("off", False), ("0", False),
    ("true", True), (" True ", True), ("yes", True), ("on", True), ("1", True),
])
def test_flag_reads_command_line_spellings(value, expected):
    assert flag(value, "resume") is expected


@pytest.mark.parametrize("value", ["flase", "", 2, None, 0.5])
def test_flag_names_the_switch_and_the_bad_value(value):
    with pytest.raises(ValueError, match=r"--resume .*expected true or false"):
        flag(value, "resume")


def _switches(config: dict) -> set[str]:
    return {k for k, v in config.items() if isinstance(v, bool)}


@pytest.mark.parametrize("config_file", sorted(BUNDLES.glob("*/configs/*.json")), ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_every_top_level_switch_a_config_reads_goes_through_flag(config_file):
    text = config_file.read_text()
    switches = _switches(json.loads(text))
    if config_file.name != "train.json" and (config_file.parent / "train.json").is_file():
        switches |= _switches(json.loads((config_file.parent / "train.json").read_text()))  # patches read train's
    for name in switches:
        bare = [m.start() for m in re.finditer(rf"@{name}\b(?!#)", text)]
        wrapped = [m.start() + len("cxrdoll.engines.flags.flag(")
                   for m in re.finditer(rf"cxrdoll\.engines\.flags\.flag\(@{name}, '{name}'\)", text)]
        assert sorted(bare) == sorted(wrapped), f"{config_file}: @{name} read without cxrdoll.engines.flags.flag"


def test_resume_false_from_the_command_line_starts_over(tmp_path):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "cxr_classifier" / "configs" / "train.json"))
    parser.update({"bundle_root": str(BUNDLES / "cxr_classifier"), "output_dir": str(tmp_path), "resume": "false",
                   "amp": "false", "use_cache": "false", "datalist": str(tmp_path / "unused.json")})
    assert parser.get_parsed_content("train#checkpoint#resume") is False
    assert parser.get_parsed_content("train#trainer#amp") is False
    parser.update({"resume": "maybe"})
    with pytest.raises(RuntimeError) as failure:  # MONAI wraps the error of a config expression
        parser.get_parsed_content("train#checkpoint#resume", lazy=False)
    assert "--resume 'maybe': expected true or false" in str(failure.value.__cause__)


@pytest.mark.parametrize("bundle, option, derived", [("cxr_seg_adapter", "pretrained_ckpt", "pretrained_file"),
                                                     ("cxr_seg_adapter", "init_ckpt", "init_file"),
                                                     ("cxr_seg_pretrain", "init_ckpt", "init_file")])
def test_a_checkpoint_option_given_as_null_on_the_command_line_is_none(bundle, option, derived):
    """``--pretrained_ckpt null`` (the backbone-only start) arrives as the string 'null'."""
    config = json.loads((BUNDLES / bundle / "configs" / "train.json").read_text())
    assert f"@{option}" not in json.dumps({k: v for k, v in config.items() if k != derived})  # all read the derived one
    for spelling in ("null", "None", "", None):
        parser = ConfigParser(config)
        parser[option] = spelling
        assert parser.get_parsed_content(derived) is None
    parser = ConfigParser(config)
    parser[option] = "runs/model.pt"
    assert parser.get_parsed_content(derived) == "runs/model.pt"
