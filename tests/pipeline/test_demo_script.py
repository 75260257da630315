"""scripts/demo.sh, the README's main command, as a user runs it from a folder of their own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(),
                    reason="needs the repository's .venv (scripts/test.sh makes it); setting it up here takes minutes")
def test_relative_paths_are_read_from_the_folder_the_script_is_run_in(tmp_path):
    """The script changes to the repository to set up .venv; it ran the demo from there too, so
    '--out run1' from a user's folder wrote into the repository and '--downstream my.json' was not found."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--out", "run1", "--downstream", "mine.json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'mine.json'}: --downstream datalist not found"
    assert not (REPO / "run1").exists()
