#!/usr/bin/env bash
# Headroom of the ACL benchmark on the clinical knee: scratch fine-tuning with the whole training pool (and 8
# labelled exams) at several step budgets, on the ACL study's own target cohort and split
# (Resources/Configs/experiment_transfer_acl_clinical.yaml: 200 exams, seed 1201; 70 test, 20 validation, pool
# 110), with every other setting the study's. It asks whether the study's budget lets scratch learn the task
# at all: a benchmark where labels matter has the whole pool well above 8 labelled exams and above chance.
# One seed, one run each: indicative, not a study result. Scratch runs only: no pretrained network takes part,
# so the budget it points to is not chosen towards a gain. The rule, fixed before the 480- and 1,200-step runs
# (2026-12-01, after the study at 120 steps and this probe's 120-step runs): a follow-up study takes the smallest
# probed budget at which the whole pool's scratch run reaches a validation AUC >= 0.80; where none does, no
# budget is chosen from this probe.
# Second rule, fixed 2026-12-01 before any of its runs, after the oracle check (scripts/acl_signal_probe.py: the
# ACL's own pixels separate torn from intact perfectly at the study's input, AUC 1.000 in every sequence, and the
# ACL lies within 4.5 px of the image centre; no network took part): the input or classifier, not the budget, is
# what is missing. Candidates, in this order, each scratch with the whole pool, seed 0, 480 steps (60 x 8),
# otherwise the study's settings: (1) a centred 96 mm field of view at 2 mm (SET="data.image_size=48"
# TAG=fov96); (2) the same field at 1 mm (SET="data.spacing_mm=1.0 data.image_size=96" TAG=fov96_1mm); (3) every
# slice instead of 12 (SET="data.max_slices=0" TAG=allslices); (4) the maximum instead of the mean over each
# slice's bottleneck (SET="model.spatial_pooling=max" TAG=spatialmax). A follow-up study takes the first that
# reaches a validation AUC >= 0.80 (then checked at 8 labelled exams, which must stay well below it: labels must
# matter); every candidate run is reported, whatever it shows.
# Two diagnostics, added 2026-12-01 after candidates (1) and (2) kept the training loss flat and before
# (3)-(6) ran; neither can choose a study input: (5) a 48 mm field (SET="data.image_size=24" TAG=fov48), where
# the ACL fills much of every central sagittal slice: if the classifier does not learn there, the training
# itself, not the input, is what fails; (6) ten times the budget, 4,800 steps, at candidate (1)'s input
# (SET="data.image_size=48" TAG=fov96, steps 4800): whether the loss moves at all given 9,600 exams seen.
# After (5) learned (validation AUC 0.990) and before this run: (5) again with 8 labelled exams (LABELLED=8), to
# see whether labels matter at that input; still a diagnostic, not a study input. After (6) learned (validation
# AUC 1.000 from epoch ~150 on) and (5) with 8 labelled reached test AUC 0.921, and before this run: (6) with 8
# labelled exams (LABELLED=8, 4,800 steps at candidate (1)'s input), the same question at the input and budget
# where the whole pool learns; a diagnostic too: a follow-up study's design is for a rule written before it.
# After that run gave 0.928 (pool 0.963) and before these: the same with 4, then 2 labelled exams (LABELLED="4 2",
# 4,800 steps at candidate (1)'s input): how far below 8 labels have to go before they matter; diagnostics too.
#   bash scripts/acl_headroom_probe.sh [OUT] [STEPS...]     (default runs/acl_headroom, steps 120 480 1200)
# COHORT=<folder> takes an existing copy of the target cohort (e.g. a study's OUT/cohorts/target); without it
# the cohort is written to OUT/target (about 14 min on 2 cores).
# LABELLED="all 8" (default) the labelled counts per budget; SET="key=value ..." further settings for every run,
# with TAG=<name> added to the run folders' names, e.g. the README's diagnostic at twice the resolution:
#   SET="data.spacing_mm=1.0 data.image_size=160" TAG=1mm LABELLED=all bash scripts/acl_headroom_probe.sh OUT 480
# Prints one line per run: steps, labelled exams, best epoch, validation AUC (what chooses), test AUC, test
# AUC of partial and of complete tears against intact, and the mean training loss over the first and the last
# 10 epochs (a run that does not learn keeps the loss of a constant guess).
set -euo pipefail
OUT=${1:-runs/acl_headroom}
shift || true
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(120 480 1200)
PLANESSL=${PLANESSL:-.venv/bin/planessl}
mkdir -p "$OUT"
COHORT=${COHORT:-$OUT/target}
[ -f "$COHORT/labels.csv" ] || "$PLANESSL" phantom knee --subjects 200 --seed 1201 --realism clinical \
    --out "$COHORT" > /dev/null

# the study's finetune_overrides (experiment_transfer_acl_clinical.yaml), steps as epochs of 8
STUDY="data.val_fraction=0.15 data.test_fraction=0.35 data.spacing_mm=2.0 data.image_size=96
       optim.steps_per_epoch=8 optim.transferred_lr=null runtime.channels_last=true runtime.progress=none
       runtime.plot=false"
run() {  # steps, labelled ("all": the whole pool)
    local steps=$1 labelled=$2 name extra=()
    name="scratch_${steps}_${labelled}${TAG:+_$TAG}"
    [ "$labelled" != all ] && extra=(--labeled-subjects "$labelled")
    # shellcheck disable=SC2086
    [ -f "$OUT/$name/metrics.json" ] || "$PLANESSL" finetune acl --config Resources/Configs/finetune_acl_demo.yaml \
        --data "dicom:$COHORT" --init scratch --seed 0 "${extra[@]}" --out "$OUT/$name" \
        --set $STUDY ${SET:-} optim.epochs=$((steps / 8)) > "$OUT/$name.json" 2> "$OUT/$name.log"
    python3 - "$OUT/$name" "$steps" "$labelled" <<'EOF'
import csv, json, sys
m = json.load(open(sys.argv[1] + "/metrics.json"))
loss = [float(r["train_loss"]) for r in csv.DictReader(open(sys.argv[1] + "/metrics.csv"))]
g = m.get("by_grade", {})
f = lambda v: "-" if v is None else f"{v:.3f}"
print(f"steps {sys.argv[2]:>5}  labelled {sys.argv[3]:>4} ({m['n_train']})  best epoch {m['best_epoch']:>3}  "
      f"val AUC {f(m['validation']['auc']['value'])}  test AUC {f(m['auc']['value'])}  "
      f"partial {f(g.get('partial', {}).get('auc'))}  complete {f(g.get('complete', {}).get('auc'))}  "
      f"train loss {sum(loss[:10]) / len(loss[:10]):.3f} -> {sum(loss[-10:]) / len(loss[-10:]):.3f}")
EOF
}
for steps in "${STEPS[@]}"; do
    for labelled in ${LABELLED:-all 8}; do
        run "$steps" "$labelled"
    done
done
