#!/usr/bin/env bash
# The README's main command: set up .venv, then run the pipeline on the synthetic default.
# Set-up runs in the repository; the demo runs in the caller's folder, so relative paths given to it
# (--out, --chexpert-root, --shared-data, --downstream) and the default runs/demo are read from there.
CALLER_DIR="$PWD"
export CXRDOLL_DEPLOY="${CXRDOLL_DEPLOY:-0}"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$CALLER_DIR"
exec python -m cxrdoll demo "$@"
