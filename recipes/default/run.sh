#!/usr/bin/env bash
# Reproduce the bundled default model (voxprint/pretrained/default) from scratch:
#   bash recipes/default/run.sh            (or: make default-model)
# 1. train the GE2E LSTM d-vector on speechocean762/train (125 speakers) on CPU;
# 2. evaluate on the 60 unseen dev speakers and store the EER threshold as the accept threshold;
# 3. copy weights, config and threshold into the package.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VOXPRINT_DATA="${VOXPRINT_DATA:-$(cd ../shared/data && pwd)}"
CONFIG="${CONFIG:-configs/ge2e_lstm_small.yaml}"
RUN="${RUN:-exp/ge2e_lstm_small}"
VOXPRINT="${VOXPRINT:-.venv/bin/voxprint}"
DEST=voxprint/pretrained/default

start=$(date +%s)
if [ -f "$RUN/checkpoint.pt" ]; then
  "$VOXPRINT" train "$CONFIG" --out "$RUN" --resume
else
  "$VOXPRINT" train "$CONFIG" --out "$RUN"
fi
echo "training took $(( $(date +%s) - start )) s"
"$VOXPRINT" eval --data "$VOXPRINT_DATA/speechocean762/dev" --model "$RUN" --write-threshold --json \
  --det "$RUN/det_dev.png" | tee "$RUN/dev_eval.json"
mkdir -p "$DEST"
cp "$RUN/model.pt" "$RUN/config.yaml" "$RUN/meta.json" "$RUN/history.json" "$DEST/"
echo "bundled model written to $DEST"
