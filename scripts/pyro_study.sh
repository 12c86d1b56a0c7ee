#!/usr/bin/env bash
# The Pyro example against armgrad vae and TraceGraph_ELBO at equal steps, seed by seed, then the
# encoder-gradient variance of Pyro's ELBOs and armgrad.pyro.ELBO at two checkpoints of the example.
#   SEEDS="0 1 2" STEPS=10000 OUT=runs/pyro bash scripts/pyro_study.sh
# Two runs at a time (one thread each); a finished run (its .json present) is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
STEPS=${STEPS:-10000}
OUT=${OUT:-runs/pyro}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
PY=.venv/bin/python
jobs=()
for seed in $SEEDS; do
  jobs+=("example-armgrad-seed$seed|$PY examples/pyro_vae.py --steps $STEPS --eval-every 1000 --seed $seed --save $OUT/example-armgrad-seed$seed.pt")
  jobs+=("example-tracegraph-average-seed$seed|$PY examples/pyro_vae.py --steps $STEPS --eval-every 1000 --seed $seed --elbo tracegraph --baseline average")
  jobs+=("vae-seed$seed|.venv/bin/armgrad vae --model linear --estimator disarm --steps $STEPS --eval-every 1000 --seed $seed --threads 1 --out $OUT/vae-seed$seed --overwrite")
done
jobs+=("example-armgrad-1000|$PY examples/pyro_vae.py --steps 1000 --eval-every 1000 --seed 0 --save $OUT/example-armgrad-1000.pt")
run() {
  local name=${1%%|*} command=${1#*|}
  if [ -s "$OUT/$name.json" ]; then echo "$name: skipped, already finished"; return; fi
  local start=$SECONDS
  $command > "$OUT/$name.log" 2>&1
  if [ -f "$OUT/$name/results.json" ]; then cp "$OUT/$name/results.json" "$OUT/$name.json"
  else tail -1 "$OUT/$name.log" > "$OUT/$name.json"; fi
  echo "$name: done in $((SECONDS - start)) s"
}
for ((i = 0; i < ${#jobs[@]}; i += 2)); do
  run "${jobs[i]}" &
  if ((i + 1 < ${#jobs[@]})); then run "${jobs[i + 1]}" & fi
  wait
done
$PY benchmarks/pyro_variance.py "$OUT/example-armgrad-1000.pt" "$OUT/example-armgrad-seed0.pt" --out "$OUT" \
  2> "$OUT/pyro_variance.log" | tee "$OUT/pyro_variance.md"
