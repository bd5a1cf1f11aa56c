#!/usr/bin/env bash
# Headroom of the segmentation benchmark: scratch fine-tuning with 1 labelled subject and with the whole
# training pool, on the phantom cohorts the README's "The transfer study" section quotes. Every figure there
# comes from this script (one seed, one run each: indicative, not a study result).
#   bash scripts/headroom_probe.sh [OUT]          (default runs/headroom; about 40 min on 2 idle cores)
# Prints one line per run: cohort, protocol, steps, labelled subjects, test Dice (mean over RV/Myo/LV, ED/ES).
set -euo pipefail
OUT=${1:-runs/headroom}
PLANESSL=${PLANESSL:-.venv/bin/planessl}
mkdir -p "$OUT"

# Clinical look: 24 subjects (14 pool / 5 validation / 5 test with finetune_seg_demo.yaml's fractions).
[ -f "$OUT/clinical24/cohort.json" ] || "$PLANESSL" phantom heart --subjects 24 --seed 1 --realism clinical \
    --out "$OUT/clinical24" > /dev/null
ORIENT="data.rotation_deg=180 data.augment_options.flip_prob=0.5"   # full-circle rotation + mirroring
run() {  # name, config, labelled (empty: all), then --set values
    local name=$1 config=$2 labelled=$3 cohort=$4; shift 4
    local extra=()
    [ -n "$labelled" ] && extra=(--labeled-subjects "$labelled")
    [ -f "$OUT/$name/result.json" ] || "$PLANESSL" finetune seg --config "$config" --seed 0 "${extra[@]}" \
        --out "$OUT/$name" --set data.dicom=null data.format=phantom data.root="$OUT/$cohort" data.cache="$OUT/seg_cache_$cohort" \
        runtime.progress=none runtime.plot=false "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{sys.argv[2]:<28} labelled {r[\"labeled_subjects\"]:>3}  best epoch {r[\"best_epoch\"]:>3}  test dice {r[\"value\"]:.3f}')" \
        "$OUT/$name.json" "$name"
}
DEMO=Resources/Configs/finetune_seg_demo.yaml
run clin_300_one      $DEMO 1 clinical24 optim.epochs=15 optim.steps_per_epoch=20
run clin_300_all      $DEMO "" clinical24 optim.epochs=15 optim.steps_per_epoch=20
run clin_1200_one     $DEMO 1 clinical24 optim.epochs=40 optim.steps_per_epoch=30
run clin_1200_all     $DEMO "" clinical24 optim.epochs=40 optim.steps_per_epoch=30
run clin_1200_one_or  $DEMO 1 clinical24 optim.epochs=40 optim.steps_per_epoch=30 $ORIENT
run clin_1200_all_or  $DEMO "" clinical24 optim.epochs=40 optim.steps_per_epoch=30 $ORIENT
run clin_2400_one_or  $DEMO 1 clinical24 optim.epochs=80 optim.steps_per_epoch=30 $ORIENT
run clin_2400_all_or  $DEMO "" clinical24 optim.epochs=80 optim.steps_per_epoch=30 $ORIENT

# Simple look, the study's target size (48 subjects: 12 test, 6 validation, 30 pool), the study's two
# protocols at their 500 steps.
[ -f "$OUT/simple48/cohort.json" ] || "$PLANESSL" phantom heart --subjects 48 --seed 1101 --realism simple \
    --out "$OUT/simple48" > /dev/null
run simple_paper_one  Resources/Configs/finetune_seg_paper.yaml 1 simple48
run simple_paper_all  Resources/Configs/finetune_seg_paper.yaml "" simple48
# (the strong protocol as it was measured then: +-15 degrees, no mirroring, transferred layers at a third of
# the rate; its config now rotates by +-30 degrees and trains every layer at the full rate)
run simple_strong_all Resources/Configs/finetune_seg_strong.yaml "" simple48 data.rotation_deg=15 \
    data.augment_options.flip_prob=0 optim.transferred_lr=3.0e-4
