# Sourced by demo.sh and test.sh: create or reuse .venv and install the pinned requirements.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
# Re-install only when the requirements changed since the last successful install.
STAMP=.venv/.cxrdoll-requirements.sha
# CXRDOLL_DEPLOY=0 skips the MONAI Deploy extra (the demo does not need it; the tests do).
DEPLOY="${CXRDOLL_DEPLOY:-1}"
stamp_for() { (cat requirements.txt requirements-deploy.txt constraints.txt pyproject.toml 2>/dev/null; echo "deploy=$1") | sha256sum | cut -d' ' -f1; }
WANT="$(stamp_for "$DEPLOY")"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
# An install with the deploy extra also serves a run without it (demo after tests: no reinstall).
if [ "$HAVE" != "$WANT" ] && ! { [ "$DEPLOY" = 0 ] && [ "$HAVE" = "$(stamp_for 1)" ]; }; then
  echo "[setup] installing requirements (torch stays on the CPU wheel)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt -c constraints.txt
  if [ -f requirements-deploy.txt ] && [ "$DEPLOY" = 1 ]; then
    .venv/bin/python -m pip install -q -r requirements-deploy.txt -c constraints.txt || echo "[setup] WARNING: deploy extra failed to install; its tests will skip"
  fi
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$WANT" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# MONAI Deploy (holoscan) wants a 32 MB stack; it is imported with every `import monai` once installed.
ulimit -s 32768 2>/dev/null || true
