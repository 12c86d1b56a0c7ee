#!/usr/bin/env bash
# The DisARM protocol's linear Fashion-MNIST table at full length: DisARM, ARM, REINFORCE-LOO and
# REINFORCE, seeds 0 1 2, 1,000,000 steps each, as two `armgrad study` processes (six runs side by
# side in each, one thread each, two cores), then `armgrad report`. Interrupt it at any time: the
# same command resumes every run from its last checkpoint (every 5,000 steps) and skips finished
# ones. Run it in the background; the progress goes to OUT/<estimators>.log:
#   nohup bash scripts/protocol_1m.sh > runs/protocol_1m.log 2>&1 &
#   MODEL=nonlinear OUT=runs/vae-1m-nonlinear bash scripts/protocol_1m.sh     # the nonlinear table
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-linear}
OUT=${OUT:-runs/vae-1m}
STEPS=${STEPS:-1000000}
mkdir -p "$OUT"
started=$SECONDS
pids=()
for estimators in "disarm arm" "reinforce_loo reinforce"; do
  log="$OUT/${estimators// /-}.log"
  echo "armgrad study: $MODEL, $estimators, seeds 0 1 2, $STEPS steps -> $OUT (log: $log)"
  # --resume: continue each run from its checkpoint, start the others from step 0, skip finished ones
  OMP_NUM_THREADS=1 .venv/bin/armgrad study --model "$MODEL" --estimator $estimators --seed 0 1 2 \
    --steps "$STEPS" --eval-every 50000 --checkpoint-every 5000 --threads 1 --out "$OUT" --resume >> "$log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "done in $(( SECONDS - started )) s (exit status $status)"
[ $status = 0 ] && .venv/bin/armgrad report "$OUT" --reference arm --out "$OUT"  # report.md: the whole folder against ARM
exit $status
