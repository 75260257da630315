"""The stage runner: printed commands, skipping finished stages, re-running changed ones, clear failures."""

from __future__ import annotations

import io
import sys

import pytest

from cxrdoll.pipeline.stages import Stage, StageFailed, StageRunner


def _writer(path, text="x"):
    return [sys.executable, "-c", f"import pathlib; pathlib.Path({str(path)!r}).write_text({text!r}); print('wrote')"]


def test_stage_runs_prints_its_command_and_is_skipped_next_time(tmp_path):
    out = tmp_path / "a.txt"
    stage = Stage("make-a", "write a", [_writer(out)], [out])
    echo = io.StringIO()
    StageRunner(tmp_path, echo=echo).run(stage)
    assert out.read_text() == "x"
    assert f"$ {sys.executable} -c" in echo.getvalue() and "    wrote" in echo.getvalue()
    assert "make-a" in (tmp_path / "timings.json").read_text()

    out.write_text("kept")
    echo = io.StringIO()
    StageRunner(tmp_path, echo=echo).run(stage)
    assert out.read_text() == "kept" and "done already, skipping" in echo.getvalue()


def test_changed_command_missing_output_or_fresh_reruns(tmp_path):
    out = tmp_path / "a.txt"
    StageRunner(tmp_path, echo=io.StringIO()).run(Stage("s", "", [_writer(out, "1")], [out]))
    StageRunner(tmp_path, echo=io.StringIO()).run(Stage("s", "", [_writer(out, "2")], [out]))
    assert out.read_text() == "2"  # a changed setting re-runs the stage
    out.unlink()
    StageRunner(tmp_path, echo=io.StringIO()).run(Stage("s", "", [_writer(out, "2")], [out]))
    assert out.read_text() == "2"  # a missing output re-runs it
    out.write_text("old")
    StageRunner(tmp_path, fresh=True, echo=io.StringIO()).run(Stage("s", "", [_writer(out, "2")], [out]))
    assert out.read_text() == "2"


def test_failures_name_the_stage_command_and_log(tmp_path):
    runner = StageRunner(tmp_path, echo=io.StringIO())
    with pytest.raises(StageFailed, match=r"(?s)stage 'boom' failed \(exit 3\) running: .*full log: .*pipeline.log"):
        runner.run(Stage("boom", "", [[sys.executable, "-c", "import sys; sys.exit(3)"]]))
    with pytest.raises(StageFailed, match=r"stage 'lazy' finished but did not write: .*never.txt"):
        runner.run(Stage("lazy", "", [[sys.executable, "-c", "pass"]], [tmp_path / "never.txt"]))
    boom = Stage("boom", "", [[sys.executable, "-c", "import sys; sys.exit(3)"]])
    assert not StageRunner(tmp_path, echo=io.StringIO()).is_done(boom)  # a failed stage is not marked done


def test_a_stage_that_fails_after_an_earlier_success_is_not_skipped_next_time(tmp_path):
    """Its outputs may be half rewritten: the old success must not vouch for them."""
    a, q = tmp_path / "labels.txt", tmp_path / "quality.txt"
    quality = Stage("quality", "", [[sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(a)!r}); "
                                     f"assert 'crash' not in p.read_text(); pathlib.Path({str(q)!r}).write_text(p.read_text())"]],
                    [q], reads=[a])
    runner = StageRunner(tmp_path, echo=io.StringIO())
    runner.run(Stage("labels", "", [_writer(a, "v1")], [a]))
    runner.run(quality)
    runner = StageRunner(tmp_path, echo=io.StringIO())
    runner.run(Stage("labels", "", [_writer(a, "v2 crash")], [a]))
    with pytest.raises(StageFailed):
        runner.run(quality)  # the upstream change re-ran it, and it failed: q.txt still says v1
    runner = StageRunner(tmp_path, echo=io.StringIO())
    runner.run(Stage("labels", "", [_writer(a, "v2 crash")], [a]))  # done, skipped
    assert not runner.is_done(quality)


PEAKS = """
import io, json, pathlib, sys
from cxrdoll.pipeline.stages import Stage, StageRunner
runner = StageRunner(pathlib.Path(sys.argv[1]), echo=io.StringIO())
runner.run(Stage("big", "", [[sys.executable, "-c", "b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                            [sys.executable, "-c", "pass"]]))  # the stage's peak is its largest command's
runner.run(Stage("small", "", [[sys.executable, "-c", "pass"]]))
print(json.dumps({name: runner.timings[name]["peak_child_rss_gb"] for name in ("big", "small")}))
"""


def test_peak_memory_is_each_stage_own(tmp_path):
    """Run from a small process, as ``python -m cxrdoll demo`` is: Linux counts a forked child from before
    its exec, so under this test process (torch and a suite's worth of memory) every stage would read large."""
    import json
    import subprocess

    result = subprocess.run([sys.executable, "-c", PEAKS, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    peaks = json.loads(result.stdout.splitlines()[-1])
    assert peaks["big"] >= 0.39 and peaks["small"] < 0.1


def test_a_stage_records_its_time_to_a_tenth_and_its_largest_command_peak_in_gib(tmp_path, monkeypatch):
    """Two commands peaking at 1.5 and 0.5 GiB (ru_maxrss is in KiB) in 2.34 s: the stage's peak is the larger."""
    import json

    from cxrdoll.pipeline import stages

    peaks_kib = iter([1.5 * 1024**2, 0.5 * 1024**2])
    clock = iter([10.0, 12.34])
    monkeypatch.setattr(StageRunner, "_run_command", lambda self, name, command: next(peaks_kib))
    monkeypatch.setattr(stages.time, "perf_counter", lambda: next(clock))
    echo = io.StringIO()
    StageRunner(tmp_path, echo=echo).run(Stage("s", "", [["first"], ["second"]]))
    assert json.loads((tmp_path / "timings.json").read_text()) == {"s": {"seconds": 2.3, "peak_child_rss_gb": 1.5}}
    assert json.loads((tmp_path / ".stages" / "s.json").read_text())["seconds"] == 2.3
    assert "[s] finished in 2 s" in echo.getvalue()


def test_a_stage_reruns_when_what_it_reads_changed_not_because_an_earlier_stage_ran(tmp_path):
    a, b, c, user = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt", tmp_path / "user.json"
    user.write_text("{}")

    def stages(a_text):
        return [Stage("a", "", [_writer(a, a_text)], [a]),
                Stage("b", "", [_writer(b, "from a")], [b], reads=[a]),
                Stage("c", "", [_writer(c, "from the user's file")], [c], reads=[user])]

    runner = StageRunner(tmp_path, echo=io.StringIO())
    for stage in stages("1"):
        runner.run(stage)
    b.write_text("stale")
    c.write_text("kept")
    runner = StageRunner(tmp_path, echo=io.StringIO())
    runner.run(stages("2")[0])  # a setting of stage a changed, and the run stopped there (--until a)
    runner = StageRunner(tmp_path, echo=io.StringIO())
    for stage in stages("2"):
        runner.run(stage)
    assert b.read_text() == "from a"  # its own command did not change, but the file it reads did
    assert c.read_text() == "kept"  # it does not read a: the re-run of a is no reason to redo it
    user.write_text('{"edited": true}')
    runner = StageRunner(tmp_path, echo=io.StringIO())
    assert [runner.is_done(stage) for stage in stages("2")] == [True, True, False]


def test_fresh_forgets_the_timings_of_earlier_runs(tmp_path):
    a = tmp_path / "a.txt"
    StageRunner(tmp_path, echo=io.StringIO()).run(Stage("old", "", [_writer(a)], [a]))
    runner = StageRunner(tmp_path, fresh=True, echo=io.StringIO())
    runner.run(Stage("new", "", [_writer(a)], [a]))
    assert list(runner.timings) == ["new"]


def _appender(folder, text):
    """A resuming tool: keeps what it finds in ``folder`` and adds to it."""
    return [sys.executable, "-c", f"import pathlib; d = pathlib.Path({str(folder)!r}); d.mkdir(exist_ok=True); "
            f"f = d / 'log.txt'; f.write_text((f.read_text() if f.exists() else '') + {text!r})"]


def test_a_rerun_for_new_settings_or_fresh_empties_the_workspace_an_interrupted_one_resumes(tmp_path):
    work = tmp_path / "ws"
    log = work / "log.txt"
    StageRunner(tmp_path, echo=io.StringIO()).run(Stage("s", "", [_appender(work, "1")], [log], work))
    echo = io.StringIO()
    StageRunner(tmp_path, echo=echo).run(Stage("s", "", [_appender(work, "2")], [log], work))
    assert log.read_text() == "2" and "emptying" in echo.getvalue()  # not "12": old results made with other settings
    StageRunner(tmp_path, fresh=True, echo=io.StringIO()).run(Stage("s", "", [_appender(work, "2")], [log], work))
    assert log.read_text() == "2"
    # interrupted: no marker for stage t yet, its workspace holds partial work that the tool resumes
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "log.txt").write_text("half,")
    StageRunner(tmp_path, echo=io.StringIO()).run(Stage("t", "", [_appender(partial, "rest")], [partial / "log.txt"], partial))
    assert (partial / "log.txt").read_text() == "half,rest"


def test_fresh_holds_for_the_stages_a_run_stopped_before(tmp_path):
    """``--fresh --until x`` then a plain run: the later stages resumed the old workspaces."""
    a, work = tmp_path / "a.txt", tmp_path / "ws"
    first, later = Stage("first", "", [_writer(a)], [a]), Stage("later", "", [_appender(work, "old,")], [work / "log.txt"], work)
    runner = StageRunner(tmp_path, echo=io.StringIO())
    runner.run(first)
    runner.run(later)
    StageRunner(tmp_path, fresh=True, echo=io.StringIO()).run(first)  # stopped after the first stage
    echo = io.StringIO()
    StageRunner(tmp_path, echo=echo).run(later)
    assert (work / "log.txt").read_text() == "old," and "emptying" in echo.getvalue()


def test_a_stage_missing_one_of_its_outputs_is_not_done(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    stage = Stage("two", "", [_writer(a), _writer(b)], [a, b])
    StageRunner(tmp_path, echo=io.StringIO()).run(stage)
    b.unlink()
    runner = StageRunner(tmp_path, echo=io.StringIO())
    assert not runner.is_done(stage)
    runner.run(stage)
    assert b.read_text() == "x"


def test_a_change_deep_inside_a_folder_it_reads_reruns_the_stage(tmp_path):
    """Label folders hold a subfolder per observation: a rewritten mask two levels down is a changed input."""
    masks, out = tmp_path / "labels", tmp_path / "out.txt"
    (masks / "Edema").mkdir(parents=True)
    (masks / "Edema" / "p1.png").write_text("v1")
    stage = Stage("seg", "", [_writer(out)], [out], reads=[masks])
    StageRunner(tmp_path, echo=io.StringIO()).run(stage)
    (masks / "Edema" / "p1.png").write_text("v2 longer")
    assert not StageRunner(tmp_path, echo=io.StringIO()).is_done(stage)


def test_a_command_killed_by_a_signal_fails_its_stage(tmp_path):
    """The kernel's OOM killer ends a command with SIGKILL: exit status -9, not a success."""
    out = tmp_path / "a.txt"
    killed = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    with pytest.raises(StageFailed, match=r"stage 'oom' failed \(exit -9\)"):
        StageRunner(tmp_path, echo=io.StringIO()).run(Stage("oom", "", [_writer(out), killed], [out]))
    assert not StageRunner(tmp_path, echo=io.StringIO()).is_done(Stage("oom", "", [_writer(out), killed], [out]))


def test_a_rerun_that_fails_after_rewriting_its_outputs_is_not_vouched_for_by_the_earlier_success(tmp_path):
    """Same commands and inputs, re-run for a deleted output: a crash half-way leaves it not done."""
    a, b, crash = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "crash"
    second = [sys.executable, "-c", f"import pathlib, sys; sys.exit(pathlib.Path({str(crash)!r}).exists())"]
    stage = Stage("s", "", [_writer(a), second, _writer(b)], [a])
    StageRunner(tmp_path, echo=io.StringIO()).run(stage)
    a.unlink()
    crash.touch()
    with pytest.raises(StageFailed):
        StageRunner(tmp_path, echo=io.StringIO()).run(stage)
    assert a.exists() and not StageRunner(tmp_path, echo=io.StringIO()).is_done(stage)


def test_the_log_holds_each_command_and_its_output(tmp_path):
    out = tmp_path / "a.txt"
    StageRunner(tmp_path, echo=io.StringIO()).run(Stage("make-a", "write a", [_writer(out)], [out]))
    log = (tmp_path / "pipeline.log").read_text()
    assert f"### [make-a] $ {sys.executable} -c" in log and "\nwrote\n" in log and "[make-a] write a" in log


class _GoWhenSeen(io.StringIO):
    """An echo that answers the child: it creates ``go`` once the child's first line reaches it."""

    def __init__(self, go):
        super().__init__()
        self.go = go

    def write(self, text):
        if text.strip() == "first":  # the child's line, not the echoed command that prints it
            self.go.touch()
        return super().write(text)


def test_a_python_commands_output_is_shown_as_it_comes_not_when_it_ends(tmp_path, monkeypatch):
    """A training run's progress must show while it runs: Python buffers a pipe unless told not to."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    go = tmp_path / "go"
    child = [sys.executable, "-c", "import pathlib, sys, time\nprint('first')\nfor _ in range(500):\n"
             f"    if pathlib.Path({str(go)!r}).exists(): sys.exit(0)\n    time.sleep(0.01)\nsys.exit(1)"]
    StageRunner(tmp_path, echo=_GoWhenSeen(go)).run(Stage("live", "", [child]))
