#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and PyTorch already installed (it needs no network
# and installs nothing): the CUDA tests (estimators on CUDA, a training step that never waits for the
# device, a short CUDA training run with resume), then the benchmark suite on the GPU.
#   bash benchmarks/gpu_check.sh            # writes benchmarks/results/gpu/suite.{json,md} and pytest.log
# About 3 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || exit 1
$PY -c "import torch; assert torch.cuda.is_available(), 'PyTorch sees no GPU'; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
status=0
$PY -m pytest -q -p no:cacheprovider -k "cuda" tests/ 2>&1 | tee "$OUT/pytest.log" || status=1
$PY benchmarks/suite.py --device cuda --only grad step layers --repeats 100 --out "$OUT" 2>&1 | tee "$OUT/suite.log" || status=1
exit $status
