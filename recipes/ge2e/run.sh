#!/usr/bin/env bash
# GE2E LSTM d-vector (Wan et al. 2018) at CPU scale: train on speechocean762/train, evaluate on dev.
#   bash recipes/ge2e/run.sh                         (CONFIG=configs/ge2e_lstm_paper.yaml for paper sizes)
# Was the bundled default of the foundation issue (8.6% dev EER); now a leaderboard system.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VOXPRINT_DATA="${VOXPRINT_DATA:-$(cd ../shared/data && pwd)}"
VOXPRINT="${VOXPRINT:-.venv/bin/voxprint}"
CONFIG="${CONFIG:-configs/ge2e_lstm_small.yaml}"
RUN="${RUN:-exp/ge2e_lstm_small}"
if [ -f "$RUN/checkpoint.pt" ]; then "$VOXPRINT" train "$CONFIG" --out "$RUN" --resume; else "$VOXPRINT" train "$CONFIG" --out "$RUN"; fi
"$VOXPRINT" eval --data "$VOXPRINT_DATA/speechocean762/dev" --model "$RUN" --write-threshold --json \
  --det "$RUN/det_dev.png" | tee "$RUN/dev_eval.json"
