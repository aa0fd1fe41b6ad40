#!/usr/bin/env bash
# Reproduce the bundled i-vector extractor (voxprint/pretrained/ivector), the default model's diarization
# partner, from scratch on CPU (about 2 minutes):   bash recipes/default/ivector.sh
# 1. train a 128-Gaussian UBM and a rank-64 total-variability matrix by EM on speechocean762/train
#    (configs/ivector_128_64.yaml; no speaker labels needed);
# 2. fit the back-ends on the training speakers (LDA + PLDA, calibrations): diarization maps window
#    i-vectors through the PLDA back-end's LDA, whitening and length normalisation;
# 3. evaluate on the unseen dev speakers with PLDA + calibration and store the 1 % false-accept threshold
#    (so the folder is also a complete verification model);
# 4. copy it into the package and name it in the default model's meta.json (diarization.fuse_with), which
#    makes `voxprint diarize` fuse the two models' window cosines (voxprint/diarization/pipeline.py).
# Each stage is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VOXPRINT_DATA="${VOXPRINT_DATA:-$(cd ../shared/data && pwd)}"
VOXPRINT="${VOXPRINT:-.venv/bin/voxprint}"
PYTHON="${PYTHON:-.venv/bin/python}"
RUN=exp/ivector_128_64
DEST=voxprint/pretrained/ivector

[ -f "$RUN/model.pt" ] || "$VOXPRINT" train configs/ivector_128_64.yaml --out "$RUN"
[ -f "$RUN/backend/plda.npz" ] || "$VOXPRINT" fit-backend --model "$RUN" --quiet
[ -f "$RUN/dev_eval.json" ] || "$VOXPRINT" eval --data "$VOXPRINT_DATA/speechocean762/dev" --model "$RUN" --backend plda \
  --calibrated --write-threshold --target-far 0.01 --json --quiet > "$RUN/dev_eval.json"
rm -rf "$DEST" && mkdir -p "$DEST"
cp -r "$RUN/model.pt" "$RUN/config.yaml" "$RUN/meta.json" "$RUN/history.json" "$RUN/backend" "$DEST/"
"$PYTHON" -c "from voxprint.runs import update_meta; update_meta('voxprint/pretrained/default', diarization={'fuse_with': 'ivector'})"
echo "bundled i-vector extractor written to $DEST"
