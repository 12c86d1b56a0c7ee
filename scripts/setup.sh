#!/usr/bin/env bash
# Create .venv and install armgrad with everything the tests and experiments need.
# torch is pinned to the CPU wheel this project is developed against; a ranged or unpinned torch
# would pull a multi-GB CUDA build. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
echo "setup: installing torch 2.13 (CPU build) and armgrad into .venv (about a minute the first time)"
.venv/bin/python -m pip install --quiet "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install --quiet -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import armgrad, torch; print('armgrad', armgrad.__version__, 'on torch', torch.__version__)"
