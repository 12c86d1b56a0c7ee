#!/usr/bin/env bash
# A comparison of estimators: every (seed, model, estimator) run of `armgrad $COMMAND` (vae or sbn)
# in its own folder under $OUT, resumed from its checkpoint if it was interrupted, then one report
# over all of them. Runs go seed by seed (every model and estimator of seed 0 first), JOBS at a
# time (one thread each), so that an interrupted study leaves complete comparisons behind.
#   MODELS="linear nonlinear" ESTIMATORS="disarm arm reinforce_loo reinforce" SEEDS="0 1 2" \
#   STEPS=100000 EVAL_EVERY=10000 JOBS=2 OUT=runs/vae-study bash scripts/study.sh
#   COMMAND=sbn DATASET=fashion-mnist-threshold MODELS="linear nonlinear" STEPS=100000 \
#   OUT=runs/sbn-study bash scripts/study.sh
# Each run's output goes to OUT/<run>.log. With JOBS=1 on a terminal, a progress bar shows each run
# as it trains; otherwise the log gets a progress line every 30 s (ARMGRAD_PROGRESS_SECONDS).
# A finished run of the same length is skipped (FORCE=1 trains it again from its checkpoint).
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
REFERENCE=${REFERENCE:-}  # the report's paired differences are against it (armgrad report's default: arm)
LIVE=""; [ "$JOBS" = 1 ] && [ -t 2 ] && LIVE=1  # a progress bar on the terminal, one run at a time
TOTAL=$(( $(wc -w <<< "$SEEDS") * $(wc -w <<< "$MODELS") * $(wc -w <<< "$ESTIMATORS") ))
export COMMAND DATASET STEPS EVAL_EVERY OUT EXTRA LIVE TOTAL FORCE="${FORCE:-}"
mkdir -p "$OUT"
echo "study: $TOTAL runs of armgrad $COMMAND on $DATASET, $STEPS steps each, $JOBS at a time, into $OUT"

one_run() {  # index seed model estimator
  local run="$OUT/$3-$4-seed$2" resume="" started=$SECONDS
  if [ -f "$run/results.json" ] && [ -z "$FORCE" ] && grep -q "\"steps\": $STEPS," "$run/results.json"; then
    echo "[$1/$TOTAL] skipped, already finished: $run"
    return 0
  fi
  [ -f "$run/checkpoint.pt" ] && resume="--resume"
  echo "[$1/$TOTAL] ${resume:+resuming }$3 $4 seed $2 -> $run (log: $run.log)"
  local cmd=(.venv/bin/armgrad "$COMMAND" --dataset "$DATASET" --model "$3" --estimator "$4" --seed "$2"
             --steps "$STEPS" --eval-every "$EVAL_EVERY" --threads 1 --out "$run" ${resume:-} $EXTRA)
  if [ -n "$LIVE" ]; then
    "${cmd[@]}" > "$run.log" || { echo "run $run failed; see the lines above"; return 1; }
  else
    "${cmd[@]}" > "$run.log" 2>&1 || { echo "run $run failed; see $run.log"; return 1; }
  fi
  echo "[$1/$TOTAL] done in $(( SECONDS - started )) s: $run"
}
export -f one_run

i=0
for seed in $SEEDS; do for model in $MODELS; do for estimator in $ESTIMATORS; do
  i=$((i + 1)); echo "$i $seed $model $estimator"
done; done; done | xargs -P "$JOBS" -L 1 bash -c 'one_run $0 $1 $2 $3'
echo
.venv/bin/armgrad report "$OUT" --out "$OUT" ${REFERENCE:+--reference "$REFERENCE"}
