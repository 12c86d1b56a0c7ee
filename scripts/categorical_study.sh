#!/usr/bin/env bash
# The categorical family side by side on one protocol (docs/results/categorical.md): Fashion-MNIST,
# 20 categorical variables of 10 categories, the linear model of the CARMS protocol, 3 seeds,
# 100,000 steps. First the estimators at equal cost (2 f evaluations per example), then ARS, ARSM
# and IndeCateR at their own smallest budgets (10, 46 and 200 evaluations). Resumable: run the same
# command again and finished runs are skipped, interrupted ones continue from their checkpoints.
#   bash scripts/categorical_study.sh                      # everything (the own-cost runs take days here)
#   OWN="" bash scripts/categorical_study.sh               # the equal-cost table only
#   STEPS=2000 SEEDS=0 OWN="ars" bash scripts/categorical_study.sh   # a first look, minutes
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/categorical-study}
STEPS=${STEPS:-100000}
EVAL_EVERY=${EVAL_EVERY:-10000}
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
EQUAL=${EQUAL-"reinforce_loo disarm disarm_iw carms st_gumbel reinmax gumbel_rao"}
OWN=${OWN-"ars arsm indecater"}
LATENTS="--categories 10 --latent-vars 20"
export MODELS=linear SEEDS STEPS EVAL_EVERY JOBS OUT REFERENCE=reinforce_loo
if [ -n "$EQUAL" ]; then
  ESTIMATORS="$EQUAL" EXTRA="$LATENTS --num-samples 2" bash scripts/study.sh
fi
if [ -n "$OWN" ]; then
  ESTIMATORS="$OWN" EXTRA="$LATENTS" bash scripts/study.sh
fi
