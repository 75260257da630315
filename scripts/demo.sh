#!/usr/bin/env bash
# The README's main command: set up .venv, then run the pipeline on the synthetic default.
export CXRDOLL_DEPLOY="${CXRDOLL_DEPLOY:-0}"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec python -m cxrdoll demo "$@"
