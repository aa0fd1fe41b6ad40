#!/usr/bin/env bash
# Reproduce the bundled default model (voxprint/pretrained/default) from scratch, on CPU:
#   bash recipes/default/run.sh            (or: make default-model)
# 1. train ECAPA-TDNN C=192 with AAM-softmax and augmentation on speechocean762/train (125 speakers);
# 2. large-margin fine-tuning (margin 0.4, 3 s crops);
# 3. fit the back-ends on the training speakers (cohort, LDA + PLDA, calibrations); PLDA is shipped:
#    on the unseen dev speakers it beat cosine and AS-norm (whose cohort is the 125 training speakers);
# 4. evaluate on the 60 unseen dev speakers with the shipped back-end; store the threshold for a
#    1% false-accept rate (on calibrated log-likelihood-ratio scores);
# 5. copy weights, config, back-end and threshold into the package.
# Each stage resumes if interrupted. Time on 2 CPU cores: see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VOXPRINT_DATA="${VOXPRINT_DATA:-$(cd ../shared/data && pwd)}"
VOXPRINT="${VOXPRINT:-.venv/bin/voxprint}"
STAGE1=exp/ecapa_c192
STAGE2=exp/ecapa_c192_lmft
BACKEND_OPTIONS=(--backend "${BACKEND:-plda}" --norm "${NORM:-none}" --calibrated)
DEST=voxprint/pretrained/default

train() {  # CONFIG RUN
  if [ -f "$2/checkpoint.pt" ]; then "$VOXPRINT" train "$1" --out "$2" --resume; else "$VOXPRINT" train "$1" --out "$2"; fi
}

start=$(date +%s)
train configs/ecapa_tdnn_c192.yaml "$STAGE1"
train configs/ecapa_tdnn_c192_lmft.yaml "$STAGE2"
echo "training took $(( $(date +%s) - start )) s"
"$VOXPRINT" fit-backend --model "$STAGE2" --quiet
"$VOXPRINT" eval --data "$VOXPRINT_DATA/speechocean762/dev" --model "$STAGE2" "${BACKEND_OPTIONS[@]}" \
  --write-threshold --target-far 0.01 --json --det "$STAGE2/det_dev.png" | tee "$STAGE2/dev_eval.json"
rm -rf "$DEST" && mkdir -p "$DEST"
cp -r "$STAGE2/model.pt" "$STAGE2/config.yaml" "$STAGE2/meta.json" "$STAGE2/history.json" "$STAGE2/backend" "$DEST/"
echo "bundled model written to $DEST"
