#!/usr/bin/env bash
# The README's main command: set up .venv, then run the pipeline on the synthetic default.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec python -m cxrdoll demo "$@"
