#!/usr/bin/env bash
# Set everything up, then run the main job: every estimator against exact enumeration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/armgrad demo --out runs/demo "$@"
