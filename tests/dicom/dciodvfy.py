"""Run dciodvfy (Debian dicom3tools) and keep its error lines."""

from __future__ import annotations

import subprocess
from pathlib import Path


def dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).decode("latin-1").splitlines() if line.startswith("Error")]
