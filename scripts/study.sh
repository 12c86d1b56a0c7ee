#!/usr/bin/env bash
# A comparison of estimators: every (model, estimator, seed) run of `armgrad $COMMAND` (vae or sbn)
# in its own folder under $OUT, resumed from its checkpoint if it was interrupted, then one report
# over all of them.
#   MODELS="linear nonlinear" ESTIMATORS="disarm arm reinforce_loo reinforce" SEEDS="0 1 2" \
#   STEPS=100000 OUT=runs/vae-study bash scripts/study.sh
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
OUT=${OUT:-runs/vae-study}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
for model in $MODELS; do
  for estimator in $ESTIMATORS; do
    for seed in $SEEDS; do
      run="$OUT/$model-$estimator-seed$seed"
      resume=""
      [ -f "$run/checkpoint.pt" ] && resume="--resume"
      [ -f "$run/results.json" ] && [ -z "${FORCE:-}" ] && grep -q "\"steps\": $STEPS," "$run/results.json" && continue
      .venv/bin/armgrad "$COMMAND" --dataset "$DATASET" --model "$model" --estimator "$estimator" --seed "$seed" \
        --steps "$STEPS" --eval-every "$EVAL_EVERY" --threads 1 --out "$run" $resume $EXTRA > "$run.log" 2>&1 \
        || { echo "run $run failed; see $run.log"; exit 1; }
      echo "done: $run"
    done
  done
done
.venv/bin/armgrad report "$OUT" --out "$OUT"
