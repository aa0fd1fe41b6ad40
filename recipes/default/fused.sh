#!/usr/bin/env bash
# Reproduce the bundled fusion (voxprint/pretrained/fused): the bundled ECAPA-TDNN and the bundled i-vector
# used as one model, for identification and verification (about 10 minutes):   bash recipes/default/fused.sh
# 1. `voxprint fuse-models default ivector`: each part embeds every recording and scores with its own
#    calibrated PLDA back-end; the fusion adds the two log-likelihood ratios (equal weights: a logistic
#    regression on training-speaker trials gives the i-vector a weight near 0, because the ECAPA has seen
#    those speakers in training and separates them almost perfectly; see docs/benchmarks.md);
# 2. evaluate on the unseen dev speakers and store the 1 % false-accept threshold;
# 3. fit the identification calibration and open-set threshold (recipes/default/fit_identification.py);
# 4. copy the folder (fusion.json and meta.json; no weights of its own) into the package.
# Each of the first two stages is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VOXPRINT_DATA="${VOXPRINT_DATA:-$(cd ../shared/data && pwd)}"
VOXPRINT="${VOXPRINT:-.venv/bin/voxprint}"
PYTHON="${PYTHON:-.venv/bin/python}"
RUN=exp/fused
DEST=voxprint/pretrained/fused

[ -f "$RUN/fusion.json" ] || "$VOXPRINT" fuse-models default ivector --out "$RUN"
[ -f "$RUN/dev_eval.json" ] || "$VOXPRINT" eval --data "$VOXPRINT_DATA/speechocean762/dev" --model "$RUN" \
  --write-threshold --target-far 0.01 --json --quiet --threads 1 > "$RUN/dev_eval.json"
"$PYTHON" recipes/default/fit_identification.py --model "$RUN"
rm -rf "$DEST" && mkdir -p "$DEST"
cp "$RUN/fusion.json" "$RUN/meta.json" "$DEST/"
echo "bundled fusion written to $DEST"
