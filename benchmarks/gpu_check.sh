#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and PyTorch already installed (it needs no network
# and installs nothing): the CUDA tests (estimators on CUDA, a training step that never waits for the
# device, a short CUDA training run with resume, a batch of runs against the same runs alone), the
# benchmark suite on the GPU, then the throughput of `armgrad study` with R = 1, 8 and 32 runs per
# process on the GPU against one run on one CPU thread (Fashion-MNIST if installed, else MNIST-format
# files written by the tests' helper); the operators per step (CUDA kernels launched) and the study's step
# captured as one CUDA graph against eager (benchmarks/cuda_graph.py). Without a GPU it says so and exits 2.
#   bash benchmarks/gpu_check.sh            # writes benchmarks/results/gpu/: grad_step_layers.*, operators.*, cuda_graph.*, throughput-{cuda,cpu}/throughput.*, logs
# About 5 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2> /dev/null \
  || ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2> /dev/null; then
  echo "gpu_check: no GPU here (nvidia-smi or PyTorch sees none): nothing run" >&2
  exit 2
fi
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
mkdir -p "$OUT"
status=0
$PY -m pytest -q -p no:cacheprovider -k "cuda" tests/ 2>&1 | tee "$OUT/pytest.log" || status=1
$PY benchmarks/suite.py --device cuda --only grad step layers --repeats 100 --out "$OUT" 2>&1 | tee "$OUT/suite.log" || status=1
DATA=(--dataset fashion-mnist)
if ! $PY -c "from armgrad.data import load_dataset; load_dataset('fashion-mnist', download=False)" 2> /dev/null; then
  $PY -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from test_data import write_mnist; write_mnist(Path('$OUT/mnist'), n_train=6000, n_test=1000)"
  DATA=(--dataset mnist --data-dir "$OUT/mnist")
fi
# operator calls, host reads and CUDA kernels per step; then the study's step as one CUDA graph against eager
$PY benchmarks/suite.py --device cuda --only operators --repeats 50 "${DATA[@]}" --out "$OUT" 2>&1 | tee "$OUT/operators.log" || status=1
$PY benchmarks/cuda_graph.py --runs 1 8 32 --steps 300 "${DATA[@]}" --out "$OUT" 2>&1 | tee "$OUT/cuda_graph.log" || status=1
$PY benchmarks/suite.py --device cuda --only throughput --throughput-runs 1 8 32 --throughput-steps 1000 "${DATA[@]}" \
  --out "$OUT/throughput-cuda" 2>&1 | tee "$OUT/throughput.log" || status=1
$PY benchmarks/suite.py --device cpu --only throughput --throughput-runs 8 --throughput-steps 1000 "${DATA[@]}" \
  --out "$OUT/throughput-cpu" 2>&1 | tee -a "$OUT/throughput.log" || status=1
$PY benchmarks/compile_check.py --device cuda --rounds 2 "${DATA[@]}" --out "$OUT" 2>&1 | tee "$OUT/compile.log" || status=1
exit $status
