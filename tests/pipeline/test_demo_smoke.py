"""The whole pipeline, end to end, at smoke size: every bundle chained through its printed command."""

from __future__ import annotations

import json
import re

import pytest

from cxrdoll.cli import main
from cxrdoll.pipeline.demo import LABELLERS, Inputs, build_stages, profile_with


def test_stage_commands_are_bundle_runs_or_cxrdoll_commands(tmp_path):
    stages = build_stages(tmp_path, profile_with("cpu"), Inputs())
    assert [s.name for s in stages] == ["data", "datalist", "classifiers", "labels", "label-quality", "pretrain",
                                        "finetune"]
    for stage in stages:
        for command in stage.commands:
            assert command[1:3] in (["-m", "monai.bundle"], ["-m", "cxrdoll"]), command
    # three different architectures, each trained through the classifier bundle
    classifier_runs = [c for c in stages[2].commands if "monai.bundle" in c]
    assert len({c[c.index("--network_name") + 1] for c in classifier_runs}) >= 3


def test_shared_real_sets_keep_unlabelled_observations_unknown(tmp_path):
    """Their blank cells mean "this source says nothing", not CheXpert's "not mentioned" (negative)."""
    stages = build_stages(tmp_path, profile_with("cpu"), Inputs(shared_data=tmp_path / "shared"))
    (prepare,) = next(s for s in stages if s.name == "datalist").commands
    assert prepare[prepare.index("--blank") + 1] == "ignore"
    lungs = tmp_path / "datalists" / "lungs.json"
    lungs.parent.mkdir()
    lungs.write_text("{}")  # written by an earlier run: still a stage, so --fresh rebuilds it
    stages = build_stages(tmp_path, profile_with("cpu"), Inputs(shared_data=tmp_path / "shared", downstream=lungs))
    assert "downstream" in [s.name for s in stages]


def test_seg_encoder_must_be_a_trained_classifier(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--archs", "resnet10", "--seg-encoder", "densenet_tiny"]) == 2
    assert "--seg-encoder 'densenet_tiny' must be one of the classifier archs ['resnet10']" in capsys.readouterr().err


def test_bad_options_fail_before_any_stage_runs(tmp_path, capsys):
    """Unknown stage or architecture and missing inputs are refused up front, not after minutes of training."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--until", "foo"]) == 2
    assert capsys.readouterr().err == (
        "error: --until 'foo': no such stage in this run; choose from "
        "['data', 'datalist', 'classifiers', 'labels', 'label-quality', 'pretrain', 'finetune']\n")
    missing = tmp_path / "lungs.json"
    assert main(["demo", "--out", str(out), "--downstream", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: --downstream datalist not found\n"
    assert main(["demo", "--out", str(out), "--archs", "resnet9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --archs: unknown architecture(s) ['resnet9']; choose from [") and "'resnet10'" in err
    assert not out.exists()


@pytest.mark.slow
def test_smoke_pipeline_writes_a_report_and_resumes(tmp_path, capsys):
    assert main(["demo", "--profile", "smoke", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    for heading in ("## Classifiers", "## DoLL label quality", "## Sample efficiency", "## Timings"):
        assert heading in report
    registry = json.loads((tmp_path / "classifiers" / "classifiers.json").read_text())
    assert [c["arch"] for c in registry["classifiers"]] == ["densenet_tiny", "resnet10"]
    for name in LABELLERS:
        assert f"| {name} |" in report
    assert re.search(r"\| \*\*total\*\* \| \*\*\d+\*\* \|", report)
    assert "-m monai.bundle run --config_file" in (tmp_path / "pipeline.log").read_text()  # commands users can copy

    capsys.readouterr()
    assert main(["demo", "--profile", "smoke", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("done already, skipping") == 7
