#!/usr/bin/env bash
# Set everything up (Fashion-MNIST included), then the main job: a short, honest comparison of
# ARM, DisARM and REINFORCE-LOO training a linear binary VAE on Fashion-MNIST, ending with the
# report (runs/first-look/report.md) and its figure (runs/first-look/report.png). About 5 minutes
# on 2 cores, set-up included. Longer studies: scripts/study.sh (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get > /dev/null; then
  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist > /dev/null \
    || echo "could not install it: armgrad will look in ~/.cache/armgrad and try to download"
fi
# ends with a short summary: the table, which estimator came out ahead, and where the report is
MODELS=linear ESTIMATORS="arm disarm reinforce_loo" SEEDS=0 STEPS=${STEPS:-3000} EVAL_EVERY=500 \
  OUT=runs/first-look bash scripts/study.sh
