#!/usr/bin/env bash
# VIMCO against local DisARM on the K-sample bound (armgrad vae --objective iwae), seed by seed:
# at equal decoder evaluations (VIMCO with 2P samples trains L_2P, local DisARM with P pairs trains
# L_P) and on the same L_K, for P in $PAIRS; every model of $MODELS; then one report over all runs.
#   MODELS="linear nonlinear" PAIRS="2 5" SEEDS="0 1 2" STEPS=10000 OUT=runs/iwae bash scripts/iwae_study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"linear nonlinear"}
PAIRS=${PAIRS:-"2 5"}
SEEDS=${SEEDS:-"0 1 2"}
STEPS=${STEPS:-10000}
EVAL_EVERY=${EVAL_EVERY:-2500}
OUT=${OUT:-runs/iwae}
for seed in $SEEDS; do
  for p in $PAIRS; do
    for setting in "local_disarm $p" "vimco $p" "vimco $((2 * p))"; do
      set -- $setting
      MODELS="$MODELS" ESTIMATORS="$1" SEEDS="$seed" STEPS="$STEPS" EVAL_EVERY="$EVAL_EVERY" JOBS=2 \
        EXTRA="--objective iwae --num-samples $2 ${EXTRA:-}" OUT="$OUT/$1-K$2" bash scripts/study.sh > /dev/null
      echo "seed $seed: $1 K=$2 done"
    done
  done
done
.venv/bin/armgrad report "$OUT" --out "$OUT" --reference vimco
