#!/usr/bin/env bash
# A comparison of estimators: every (seed, model, estimator) run of `armgrad $COMMAND` (vae or sbn)
# in its own folder under $OUT, resumed from its checkpoint if it was interrupted, then one report
# over all of them. Runs go seed by seed (every model and estimator of seed 0 first), JOBS at a
# time (one thread each), so that an interrupted study leaves complete comparisons behind.
#   MODELS="linear nonlinear" ESTIMATORS="disarm arm reinforce_loo reinforce" SEEDS="0 1 2" \
#   STEPS=100000 EVAL_EVERY=10000 JOBS=2 OUT=runs/vae-study bash scripts/study.sh
#   COMMAND=sbn DATASET=fashion-mnist-threshold MODELS="linear nonlinear" STEPS=100000 \
#   OUT=runs/sbn-study bash scripts/study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COMMAND=${COMMAND:-vae}
if [ "$COMMAND" = sbn ]; then DATASET=${DATASET:-fashion-mnist-threshold}; else DATASET=${DATASET:-fashion-mnist}; fi
MODELS=${MODELS:-linear}
ESTIMATORS=${ESTIMATORS:-"disarm arm reinforce_loo"}
SEEDS=${SEEDS:-0}
STEPS=${STEPS:-2000}
EVAL_EVERY=${EVAL_EVERY:-500}
JOBS=${JOBS:-1}
OUT=${OUT:-runs/vae-study}
EXTRA=${EXTRA:-}
export COMMAND DATASET STEPS EVAL_EVERY OUT EXTRA FORCE="${FORCE:-}"
mkdir -p "$OUT"

one_run() {  # seed model estimator
  local run="$OUT/$2-$3-seed$1" resume=""
  [ -f "$run/checkpoint.pt" ] && resume="--resume"
  if [ -f "$run/results.json" ] && [ -z "$FORCE" ] && grep -q "\"steps\": $STEPS," "$run/results.json"; then return 0; fi
  .venv/bin/armgrad "$COMMAND" --dataset "$DATASET" --model "$2" --estimator "$3" --seed "$1" \
    --steps "$STEPS" --eval-every "$EVAL_EVERY" --threads 1 --out "$run" $resume $EXTRA > "$run.log" 2>&1 \
    || { echo "run $run failed; see $run.log"; return 1; }
  echo "done: $run"
}
export -f one_run

for seed in $SEEDS; do for model in $MODELS; do for estimator in $ESTIMATORS; do
  echo "$seed $model $estimator"
done; done; done | xargs -P "$JOBS" -L 1 bash -c 'one_run $0 $1 $2'
.venv/bin/armgrad report "$OUT" --out "$OUT"
