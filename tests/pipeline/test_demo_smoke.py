"""The whole pipeline, end to end, at smoke size: every bundle chained through its printed command."""

from __future__ import annotations

import json
import re
import sys

import pytest

from cxrdoll.cli import main
from cxrdoll.pipeline.demo import LABELLERS, Inputs, build_stages, profile_with
from cxrdoll.pipeline.stages import Stage, StageFailed


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
    # a stage fingerprints what it reads: a folder holding the work folder would change with every run
    work = tmp_path / "shared" / "run"
    stages = build_stages(work, profile_with("cpu"), Inputs(shared_data=tmp_path / "shared"))
    assert not [(s.name, r) for s in stages for r in s.reads if work.is_relative_to(r)]


def test_a_failed_stage_is_reported_on_stderr_with_exit_1(tmp_path, capsys, monkeypatch):
    """The stage's own output is echoed on stdout; the line saying which stage failed belongs on stderr,
    with the other errors, so that a script keeping only stderr still sees it."""
    boom = Stage("boom", "fail", [[sys.executable, "-c", "import sys; sys.exit(3)"]])
    monkeypatch.setattr("cxrdoll.pipeline.command.build_stages", lambda *args: [boom])
    assert main(["demo", "--out", str(tmp_path / "demo"), "--until", "boom"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: stage 'boom' failed (exit 3) running: ")
    assert "error:" not in captured.out


def test_device_cuda_without_a_gpu_is_refused(tmp_path, capsys, monkeypatch):
    """It picked the full-size profile and ran it on the CPU (the bundles take a GPU only when one is
    visible): hours of training for a flag that reads like a device choice."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ran = []
    monkeypatch.setattr("cxrdoll.pipeline.command.StageRunner.run", lambda self, stage: ran.append(stage.name))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == (
        "error: --device cuda: no CUDA GPU is visible to torch; use --device cpu (the default), or --profile cuda "
        "to run the full-size settings on the CPU anyway\n")
    assert ran == [] and not (tmp_path / "demo").exists()


def test_device_cuda_with_a_profile_is_not_refused(tmp_path, capsys, monkeypatch):
    """With --profile given, --device picks no size, so refusing it (and advising --profile cuda to
    someone who gave a profile) stopped a run that would do exactly what it asked."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ran = []
    monkeypatch.setattr("cxrdoll.pipeline.command.StageRunner.run", lambda self, stage: ran.append(stage.name))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cuda", "--profile", "smoke",
                 "--until", "data"]) == 0
    assert ran == ["data"] and "--device" not in capsys.readouterr().err


def test_repeated_archs_options_add_up(tmp_path, capsys, monkeypatch):
    """'--archs resnet10 --archs resnet10' kept only the last list (one resnet10) and ran the pipeline."""
    def run(self, stage):
        raise StageFailed("ran")

    monkeypatch.setattr("cxrdoll.pipeline.command.StageRunner.run", run)
    argv = ["demo", "--out", str(tmp_path / "demo"), "--seg-encoder", "resnet10"]
    assert main([*argv, "--archs", "resnet10", "--archs", "resnet10"]) == 2
    assert "--archs: ['resnet10'] listed more than once" in capsys.readouterr().err


def test_chexpert_csv_without_chexpert_root_is_refused(tmp_path, capsys, monkeypatch):
    """It was ignored: the pipeline ran on the synthetic phantoms while the user meant their CheXpert CSV."""
    def run(self, stage):
        raise StageFailed("ran")

    monkeypatch.setattr("cxrdoll.pipeline.command.StageRunner.run", run)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--chexpert-csv", "train.csv"]) == 2
    assert capsys.readouterr().err.startswith("error: --chexpert-csv is read under --chexpert-root: give "
                                              "--chexpert-root too")
    assert not (tmp_path / "demo").exists()


def test_chexpert_root_without_downstream_is_refused_before_any_stage(tmp_path, capsys, monkeypatch):
    """Without --downstream, fine-tuning read the synthetic organ set, which only the phantoms' data stage writes:
    the run failed at its last stage, after training the classifiers and pre-training on the user's CheXpert."""
    ran = []
    monkeypatch.setattr("cxrdoll.pipeline.command.StageRunner.run", lambda self, stage: ran.append(stage.name))
    (tmp_path / "chexpert").mkdir()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--chexpert-root", str(tmp_path / "chexpert")]) == 2
    assert capsys.readouterr().err.startswith("error: --chexpert-root needs --downstream, a segmentation datalist")
    assert ran == [] and not (tmp_path / "demo").exists()


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


def test_the_report_quotes_only_this_runs_finished_current_stages(tmp_path):
    """An earlier run's results left in the folder (a synthetic run's label quality under a shared-data run,
    or anything after a --fresh run stopped early) must not be reported as this run's."""
    from cxrdoll.pipeline.report import write_report

    (tmp_path / "classifiers").mkdir()
    (tmp_path / "classifiers" / "classifiers.json").write_text(json.dumps(
        {"classifiers": [{"name": "old-arch", "auroc": {}, "mean_auroc": 0.5}]}))
    for folder, name in (("label_quality", "label_quality.md"), ("sample_efficiency", "results.md")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("# old\nRESULT OF AN EARLIER RUN\n")
    (tmp_path / "timings.json").write_text(json.dumps({s: {"seconds": 10, "peak_child_rss_gb": 1.0}
                                                       for s in ("data", "classifiers", "label-quality", "finetune")}))
    shared = ["data", "datalist", "classifiers", "labels", "pretrain", "downstream", "finetune"]
    report = write_report(tmp_path, "t", tmp_path / "pipeline.log", shared, ["data"]).read_text()
    assert "old-arch" not in report and "EARLIER RUN" not in report
    assert "_The classifiers stage has not run in this folder with this run's settings and inputs._" in report
    assert "No true masks for this data" in report  # no label-quality stage in this run at all
    assert "| **total** | **10** |" in report  # the data stage only
    report = write_report(tmp_path, "t", tmp_path / "pipeline.log", shared, shared).read_text()
    assert "old-arch" in report and report.count("RESULT OF AN EARLIER RUN") == 1  # sample efficiency, not quality
    synthetic = ["data", "datalist", "classifiers", "labels", "label-quality", "pretrain", "finetune"]
    report = write_report(tmp_path, "t", tmp_path / "pipeline.log", synthetic, ["data"]).read_text()
    assert "_The label-quality stage has not run in this folder" in report and "EARLIER RUN" not in report


def test_the_two_data_sources_are_refused_together(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path), "--chexpert-root", str(tmp_path), "--shared-data", str(tmp_path)])
    assert "argument --shared-data: not allowed with argument --chexpert-root" in capsys.readouterr().err


def test_stage_commands_name_the_environments_python_however_it_was_started():
    """python3 and python from one venv must give the same commands, or every marker says "changed"."""
    import subprocess
    import sys
    from pathlib import Path

    code = "from cxrdoll.pipeline.demo import PY; print(PY)"
    spellings = [Path(sys.prefix, "bin", name) for name in ("python", "python3")]
    spellings = [str(p) for p in spellings if p.exists()]
    printed = {subprocess.run([p, "-c", code], capture_output=True, text=True, check=True).stdout for p in spellings}
    assert len(spellings) == 2 and len(printed) == 1


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


def test_the_report_tables_sections_and_figures(tmp_path):
    """The registry's AUROCs to three places for every CheXpert observation, a stage's own headings nested
    under the report's, timings in this run's stage order, and figures copied only from stages that ran."""
    from cxrdoll.pipeline.report import timing_table, write_report

    (tmp_path / "classifiers").mkdir()
    (tmp_path / "classifiers" / "classifiers.json").write_text(json.dumps({"classifiers": [
        {"name": "netA", "auroc": {"Edema": 0.81234, "No Finding": 0.5}, "mean_auroc": 0.70049},
        {"name": "netB", "auroc": {"Edema": 0.9}, "mean_auroc": 0.6}]}))
    (tmp_path / "sample_efficiency").mkdir()
    (tmp_path / "sample_efficiency" / "results.md").write_text("# Sample efficiency\n## Dice per size\n| a |\n")
    (tmp_path / "sample_efficiency" / "results.png").write_bytes(b"png")
    overlays = tmp_path / "labels" / "doll_ig" / "overlays"
    overlays.mkdir(parents=True)
    for i in range(5):
        (overlays / f"p{i}.png").write_bytes(b"png")
    (tmp_path / "timings.json").write_text(json.dumps({
        "finetune": {"seconds": 100.4, "peak_child_rss_gb": 1.234}, "classifiers": {"seconds": 20.6, "peak_child_rss_gb": 2.5},
        "labels": {"seconds": 3, "peak_child_rss_gb": 0.5}}))
    stages = ["classifiers", "labels", "finetune"]
    report = write_report(tmp_path, "t", tmp_path / "pipeline.log", stages, ["classifiers", "finetune"]).read_text()
    lines = report.splitlines()
    assert "| observation | netA | netB |" in lines
    start = lines.index("| observation | netA | netB |") + 2
    assert lines[start - 1] == "|---|---|---|"  # one delimiter per column, or markdown shows no table
    rows = lines[start:lines.index("| **mean of the competition five** | **0.700** | **0.600** |")]
    assert len(rows) == 14 and rows[0] == "| No Finding | 0.500 |  |" and "| Edema | 0.812 | 0.900 |" in rows
    assert "## Sample efficiency (downstream fine-tuning)" in lines and "### Dice per size" in lines
    assert not {"# Sample efficiency", "## Sample efficiency"} & set(lines)  # its title gives way to the report's
    assert "![sample efficiency](figures/sample_efficiency.png)" in lines
    assert (tmp_path / "figures" / "sample_efficiency.png").read_bytes() == b"png"
    assert "DoLL overlays" not in report and not list((tmp_path / "figures").glob("doll_*"))  # labels not done
    timing = lines[lines.index("| stage | wall time (s) | peak memory of its processes (GB) |") + 2:][:3]
    assert timing == ["| classifiers | 21 | 2.50 |", "| finetune | 100 | 1.23 |", "| **total** | **121** | |"]

    (tmp_path / "sample_efficiency" / "results.md").write_text("## Dice per size\n| a |\n")  # no title of its own
    report = write_report(tmp_path, "t", tmp_path / "pipeline.log", stages, stages).read_text()
    assert "### Dice per size\n| a |\n" in report
    assert [f.name for f in sorted((tmp_path / "figures").glob("doll_*"))] == [f"doll_p{i}.png" for i in range(4)]
    assert "![p0](figures/doll_p0.png)" in report
    write_report(tmp_path, "t", tmp_path / "pipeline.log", stages, ["classifiers"])
    assert list((tmp_path / "figures").iterdir()) == []  # an earlier report's figures are not this one's

    (tmp_path / "timings.json").write_text(json.dumps({name: {"seconds": 0.4, "peak_child_rss_gb": 0.1} for name in stages}))
    assert timing_table(tmp_path / "timings.json", stages).splitlines()[-1] == "| **total** | **1** | |"  # 1.2 s in all


def test_stage_wiring_of_the_synthetic_run(tmp_path):
    """The settings each stage's command carries and the files whose change re-runs it."""
    p = profile_with("cpu")
    stages = {s.name: s for s in build_stages(tmp_path, p, Inputs())}

    def option(command, name):
        return command[command.index(f"--{name}") + 1]

    items = {option(c, "explainer"): option(c, "max_items_per_section") for c in stages["labels"].commands}
    assert items == {"doll_ig": "400", "ig": "60", "gradcam": "60", "gradcampp": "60"}  # DoLL labels the pre-training set
    (pretrain,) = stages["pretrain"].commands
    assert option(pretrain, "init_ckpt") == str(tmp_path / "classifiers" / "resnet10" / "model.pt")
    assert option(pretrain, "encoder_name") == "resnet10"
    (finetune,) = stages["finetune"].commands
    assert option(finetune, "seeds") == "0,1,2" and option(finetune, "sizes") == "8,32"
    downstream = tmp_path / "data" / "organs" / "datalist.json"
    assert option(finetune, "datalist") == str(downstream) and downstream in stages["finetune"].reads
    assert stages["datalist"].reads == [tmp_path / "data" / "CheXpert-v1.0-small"]
    assert stages["classifiers"].reads == [tmp_path / "datalists" / "chexpert.json"]
    assert stages["labels"].reads == [tmp_path / "classifiers" / "classifiers.json", tmp_path / "datalists" / "chexpert.json"]
    assert tmp_path / "data" / "truth" in stages["label-quality"].reads  # regenerated phantoms re-score the labels
    assert option(finetune, "encoder-name") == "resnet10" and option(finetune, "profile") == "demo"
    (synth,) = stages["data"].commands
    assert (option(synth, "n-organs"), option(synth, "n-lesions")) == (str(p.n_organs), str(p.n_lesions)) == ("120", "40")
    assert option(stages["classifiers"].commands[-1], "image-size") == str(p.image_size)  # the registry's, as trained
    for train in stages["classifiers"].commands[:-1]:  # from scratch: the profile's rate, not the bundle's default
        assert (option(train, "learning_rate"), option(train, "max_epochs")) == (str(p.classifier_lr), "3")
    for label in stages["labels"].commands:  # the size the classifiers were trained at, the profile's IG and τ
        assert (option(label, "image_size"), option(label, "ig_options#steps"), option(label, "tau")) == ("64", "8", "0.75")
    assert (option(pretrain, "image_size"), option(pretrain, "max_epochs")) == ("64", "8")
    assert option(finetune, "pretrained-ckpt") == str(tmp_path / "pretrain" / "model.pt")
    assert option(finetune, "classifier-ckpt") == option(pretrain, "init_ckpt")  # the baseline starts where DoLL did
    (prepare,) = stages["datalist"].commands
    assert option(prepare, "valid-csv") == "CheXpert-v1.0-small/valid.csv"  # AUROCs on the held-out phantoms
    assert tmp_path / "data" / "truth" in stages["data"].outputs
    assert {"--preview", "--overwrite"} <= set(synth)  # figures for the report; new settings regenerate in place


class _RecordingRunner:
    """Stands in for StageRunner: records the stages run, runs nothing."""

    ran: list[str] = []
    stages: list = []

    def __init__(self, work, fresh=False):
        self.log_path = work / "pipeline.log"
        type(self).ran, type(self).stages = [], []

    def run(self, stage):
        type(self).ran.append(stage.name)
        type(self).stages.append(stage)

    def is_done(self, stage):
        return stage.name in type(self).ran


def test_until_stops_after_the_named_stage_and_the_report_names_the_data(tmp_path, monkeypatch, capsys):
    import cxrdoll.pipeline.command as command

    monkeypatch.setattr(command, "StageRunner", _RecordingRunner)
    assert main(["demo", "--out", str(tmp_path), "--until", "datalist"]) == 0
    assert _RecordingRunner.ran == ["data", "datalist"]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# cxrdoll pipeline report: synthetic phantoms\n")
    assert "_The classifiers stage has not run in this folder with this run's settings and inputs._" in report


def test_a_failed_stage_exits_1_with_its_message(tmp_path, monkeypatch, capsys):
    import cxrdoll.pipeline.command as command
    from cxrdoll.pipeline.stages import StageFailed

    class Failing(_RecordingRunner):
        def run(self, stage):
            raise StageFailed(f"stage {stage.name!r} failed (exit 3)")

    monkeypatch.setattr(command, "StageRunner", Failing)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().endswith("error: stage 'data' failed (exit 3)")
    assert not (tmp_path / "report.md").exists()


def test_shared_data_defaults_the_downstream_datalist_to_the_work_folders_and_a_missing_folder_is_refused(
        tmp_path, monkeypatch, capsys):
    import cxrdoll.pipeline.command as command

    monkeypatch.setattr(command, "StageRunner", _RecordingRunner)
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", "w", "--shared-data", "shared", "--until", "downstream"]) == 0
    assert _RecordingRunner.ran == ["data", "datalist", "classifiers", "labels", "pretrain", "downstream"]
    data, downstream = _RecordingRunner.stages[0], _RecordingRunner.stages[-1]
    assert str(tmp_path / "shared") in data.commands[0]  # absolute: the commands run from any folder
    assert downstream.outputs == [tmp_path / "w" / "datalists" / "lungs.json"]
    assert (tmp_path / "w" / "report.md").read_text().startswith("# cxrdoll pipeline report: shared real data\n")
    (tmp_path / "file").write_text("")
    assert main(["demo", "--out", "w", "--shared-data", "file"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'file'}: --shared-data folder not found\n"


def test_chexpert_csv_is_used_and_the_downstream_datalist_is_read_before_any_stage(tmp_path, monkeypatch, capsys):
    import cxrdoll.pipeline.command as command

    monkeypatch.setattr(command, "StageRunner", _RecordingRunner)
    (tmp_path / "chexpert").mkdir()
    downstream = tmp_path / "lungs.json"
    downstream.write_text(json.dumps({"training": []}))
    monkeypatch.chdir(tmp_path)  # relative paths, made absolute: the commands run from any folder
    args = ["demo", "--out", "w", "--chexpert-root", "chexpert", "--downstream", "lungs.json"]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: {downstream}: no 'validation' list (found keys ['training'])\n"
    assert not (tmp_path / "w").exists()
    downstream.write_text(json.dumps({"training": [], "validation": []}))
    titles = []  # every stage "ran": the report, which would read their outputs, keeps only its title
    monkeypatch.setattr(command, "write_report", lambda work, title, *rest: titles.append(title) or work / "report.md")
    assert main([*args, "--chexpert-csv", "mine.csv"]) == 0
    stages = {s.name: s for s in _RecordingRunner.stages}
    (prepare,) = stages["datalist"].commands
    assert prepare[prepare.index("--csv") + 1] == "mine.csv"
    assert stages["datalist"].reads == [tmp_path / "chexpert" / "mine.csv"]  # not the whole image tree
    (finetune,) = stages["finetune"].commands
    assert finetune[finetune.index("--datalist") + 1] == str(downstream)
    assert titles == ["cxrdoll pipeline report: your CheXpert data"]


def test_profile_picks_the_sizes_whatever_the_device(tmp_path, monkeypatch, capsys):
    import cxrdoll.pipeline.command as command
    from cxrdoll.pipeline.demo import PROFILES

    monkeypatch.setattr(command, "StageRunner", _RecordingRunner)
    assert main(["demo", "--out", str(tmp_path), "--profile", "smoke", "--until", "data"]) == 0
    (synth,) = _RecordingRunner.stages[0].commands
    assert synth[synth.index("--n") + 1] == str(PROFILES["smoke"].n_images) != str(PROFILES["cpu"].n_images)
