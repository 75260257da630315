#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the CPU test suite.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if ! command -v dciodvfy >/dev/null 2>&1; then
  echo "[setup] installing dicom3tools (dciodvfy) for DICOM SEG validation"
  (apt-get update -qq && apt-get install -y -qq dicom3tools >/dev/null) || echo "[setup] WARNING: dicom3tools not installed; dciodvfy checks will skip"
fi
exec python -m pytest -m "not gpu" "$@"
