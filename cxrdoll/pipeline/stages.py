"""Run pipeline stages as visible shell commands, skip the ones already done, and time them.

Every stage is a list of commands a user could paste into a shell; nothing runs through a
private code path. A stage counts as done when its marker file records the same commands and the
same fingerprints of the files it reads (``reads``: another stage's outputs or the user's inputs)
and its outputs exist; so a re-run skips it, and a changed setting or input re-runs that stage
and, through their reads, the stages that use what it wrote (not the ones that merely follow it).
The tools inside a stage resume from what they find (classifier checkpoints, finished labels,
finished fine-tuning runs), so a stage re-run for a changed setting or input, or under
``--fresh``, first empties its ``workspace``; a stage that was only interrupted keeps it and resumes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from cxrdoll.io import files_fingerprint, read_json, write_json_atomic


@dataclass
class Stage:
    name: str
    description: str
    commands: list[list[str]]
    outputs: list[Path] = field(default_factory=list)
    workspace: Path | None = None  # the folder its tools resume from
    reads: list[Path] = field(default_factory=list)  # files or folders it reads that it does not write


def command_lines(stage: Stage) -> list[str]:
    """The stage's commands as shell lines: what its marker records and what is printed."""
    return [shlex.join(c) for c in stage.commands]


def fingerprint(path: Path) -> str | None:
    """Sizes and modification times of a file, or of a folder's files; None when the path does not exist.

    Not the bytes: a datalist rewritten identically still names images that a re-run stage rewrote,
    so a rewrite must count as a change.
    """
    if path.is_file():
        return files_fingerprint([path])
    if path.is_dir():
        return files_fingerprint(sorted(p for p in path.rglob("*") if p.is_file()), header=str(path))
    return None


def read_fingerprints(stage: Stage) -> dict[str, str | None]:
    return {str(path): fingerprint(path) for path in stage.reads}


class StageFailed(RuntimeError):
    pass


class StageRunner:
    """Runs stages in order, printing each command, logging output and recording timings."""

    def __init__(self, work_dir: Path, fresh: bool = False, echo: TextIO | None = None):
        self.work_dir = work_dir
        self.marker_dir = work_dir / ".stages"
        self.log_path = work_dir / "pipeline.log"
        self.timings_path = work_dir / "timings.json"
        self.echo = echo or sys.stdout  # looked up now, not at import, so redirected output is honoured
        self.fresh = fresh
        if fresh and self.marker_dir.exists():
            # kept as "made by an earlier run" rather than deleted: a stage this run does not reach
            # (--until, Ctrl-C) must still start over next time, not resume the old workspace
            for marker in self.marker_dir.glob("*.json"):
                write_json_atomic(marker, {"stale": True})
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        keep_timings = self.timings_path.exists() and not fresh
        self.timings: dict[str, dict] = read_json(self.timings_path) if keep_timings else {}

    def _marker(self, stage: Stage) -> dict:
        """The stage's marker: the commands of its last run and whether that run finished ({} if none)."""
        marker = self.marker_dir / f"{stage.name}.json"
        return read_json(marker) if marker.exists() else {}

    def _mark(self, stage: Stage, reads: dict[str, str | None], **fields) -> None:
        write_json_atomic(self.marker_dir / f"{stage.name}.json",
                          {"commands": command_lines(stage), "reads": reads, **fields})

    def _same_as_recorded(self, stage: Stage, marker: dict, reads: dict[str, str | None]) -> bool:
        return bool(marker) and marker.get("commands") == command_lines(stage) and marker.get("reads", {}) == reads

    def _done(self, stage: Stage, marker: dict, reads: dict[str, str | None]) -> bool:
        return (self._same_as_recorded(stage, marker, reads) and marker.get("finished", True)
                and all(p.exists() for p in stage.outputs))

    def is_done(self, stage: Stage) -> bool:
        return self._done(stage, self._marker(stage), read_fingerprints(stage))

    def run(self, stage: Stage) -> None:
        marker, reads = self._marker(stage), read_fingerprints(stage)  # a folder's fingerprint stats every file: once
        if self._done(stage, marker, reads):
            self._say(f"[{stage.name}] done already, skipping ({stage.description}); --fresh re-runs it")
            return
        self._say(f"[{stage.name}] {stage.description}")
        # made from other settings or inputs than this run's (a stage only interrupted resumes in it)
        stale = self.fresh or (bool(marker) and not self._same_as_recorded(stage, marker, reads))
        if stage.workspace is not None and stage.workspace.exists() and stale:
            self._say(f"  (emptying {stage.workspace}: made with other settings or inputs)")
            shutil.rmtree(stage.workspace)
        # From here its outputs are this run's: until it finishes, they are neither done nor another run's.
        self._mark(stage, reads, finished=False)
        start = time.perf_counter()
        peak_kb = max(self._run_command(stage.name, command) for command in stage.commands)
        missing = [str(p) for p in stage.outputs if not p.exists()]
        if missing:
            raise StageFailed(f"stage {stage.name!r} finished but did not write: {', '.join(missing)}")
        seconds = time.perf_counter() - start
        self.timings[stage.name] = {"seconds": round(seconds, 1), "peak_child_rss_gb": round(peak_kb / 1024**2, 2)}
        write_json_atomic(self.timings_path, self.timings)
        self._mark(stage, reads, finished=True, seconds=round(seconds, 1))
        self._say(f"[{stage.name}] finished in {seconds:.0f} s")

    def _run_command(self, stage_name: str, command: list[str]) -> int:
        """Run one command, its output to the log and the echo; returns its peak resident memory in KiB.

        The peak is this command's own (``wait4``), not the largest of every child so far; Linux
        counts the forked child from before its ``exec``, so it is at least this process's own
        memory (about 33 MB for ``python -m cxrdoll demo``, which does not import torch).
        """
        line = shlex.join(command)
        self._say(f"  $ {line}")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("a") as log:
            log.write(f"\n### [{stage_name}] $ {line}\n")
            log.flush()
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            assert proc.stdout is not None
            for out_line in proc.stdout:
                log.write(out_line)
                self.echo.write(f"    {out_line}")  # text mode: a progress bar's "\r" arrives as a line end
                self.echo.flush()
            _, status, usage = os.wait4(proc.pid, 0)
            code = proc.returncode = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise StageFailed(f"stage {stage_name!r} failed (exit {code}) running: {line}\n  full log: {self.log_path}")
        return usage.ru_maxrss

    def _say(self, text: str) -> None:
        print(text, file=self.echo, flush=True)
        with self.log_path.open("a") as log:
            log.write(text + "\n")
