#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and PyTorch already installed (it needs no network
# and installs nothing): the CUDA tests (estimators on CUDA, a training step that never waits for the
# device, a short CUDA training run with resume, a batch of runs against the same runs alone), the
# benchmark suite on the GPU, then the throughput of `armgrad study` with R = 1, 8 and 32 runs per
# process on the GPU against one run on one CPU thread (Fashion-MNIST if installed, else MNIST-format
# files written by the tests' helper).
#   bash benchmarks/gpu_check.sh            # writes benchmarks/results/gpu/: grad_step_layers.*, throughput-{cuda,cpu}/throughput.*, logs
# About 5 minutes on an H100.
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
DATA=(--dataset fashion-mnist)
if ! $PY -c "from armgrad.data import load_dataset; load_dataset('fashion-mnist', download=False)" 2> /dev/null; then
  $PY -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from test_data import write_mnist; write_mnist(Path('$OUT/mnist'), n_train=6000, n_test=1000)"
  DATA=(--dataset mnist --data-dir "$OUT/mnist")
fi
$PY benchmarks/suite.py --device cuda --only throughput --throughput-runs 1 8 32 --throughput-steps 1000 "${DATA[@]}" \
  --out "$OUT/throughput-cuda" 2>&1 | tee "$OUT/throughput.log" || status=1
$PY benchmarks/suite.py --device cpu --only throughput --throughput-runs 8 --throughput-steps 1000 "${DATA[@]}" \
  --out "$OUT/throughput-cpu" 2>&1 | tee -a "$OUT/throughput.log" || status=1
$PY benchmarks/compile_check.py --device cuda --rounds 2 "${DATA[@]}" --out "$OUT" 2>&1 | tee "$OUT/compile.log" || status=1
exit $status
