#!/usr/bin/env bash
# The sample weights the Slicer module bundles (Resources/Sample/): a small network pretrained on
# the plane pretext tasks of a synthetic heart cohort (lines + location, 'planessl pretrain'),
# then fine-tuned for cardiac segmentation on the same synthetic cohort ('planessl finetune seg').
# Trained on synthetic data only: NOT for clinical use; they exist so that a new user can try
# Show planes, predicted lines and segmentation with one click (Load sample).
#
#   nice -n 10 bash scripts/train_sample_weights.sh [OUT]      (about 20 minutes on 2 busy cores)
#
# then copies model.safetensors + manifest.json into Resources/Sample/{heart-plane-lines,
# heart-segmentation}/ and prints the SHA-256 of each model.safetensors for Resources/Models.json.
# The sample study of the module (PlaneSSLLib/slicer_logic/logic.py SAMPLE_COHORT_ARGS, seed 7) is
# not among the training subjects (seed 0).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/sample_weights}
PY=${PY:-.venv/bin/python}
planessl() { PYTHONPATH=. "$PY" -m training_cli.main "$@"; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

planessl phantom heart --subjects 12 --seed 0 --phases 2 --matrix 64 --workers 1 --quiet --out "$OUT/data"
planessl pretrain --config Resources/Configs/pretrain_demo.yaml --data "phantom:$OUT/data" --out "$OUT/pretrain" \
  --set data.cache="$OUT/cache" model.base_filters=8 model.levels=4 optim.epochs=50 optim.decay_every=35 \
  runtime.device=cpu runtime.seed=0
planessl finetune seg --config Resources/Configs/finetune_seg_demo.yaml --data "phantom:$OUT/data" \
  --init "$OUT/pretrain/model" --seed 0 --out "$OUT/seg" \
  --set data.cache="$OUT/seg_cache" optim.epochs=25 runtime.device=cpu

for pair in "heart-plane-lines:$OUT/pretrain/model" "heart-segmentation:$OUT/seg/model"; do
  name=${pair%%:*}; src=${pair#*:}
  mkdir -p "Resources/Sample/$name"
  cp "$src/model.safetensors" "$src/manifest.json" "Resources/Sample/$name/"
  chmod 644 "Resources/Sample/$name/"*
  echo "$name $(sha256sum "Resources/Sample/$name/model.safetensors" | cut -d' ' -f1) $(stat -c %s "Resources/Sample/$name/model.safetensors")"
done
