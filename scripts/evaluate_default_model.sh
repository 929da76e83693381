#!/usr/bin/env bash
# Evaluate a model package (default: the shipped one) the way its card reports it:
# 0-10 simulated clicks x 3 seeds with the paper's simulated user, full-ROI refinement,
# on held-out phantoms (seeds never used in training), held-out bulky-tumour phantoms
# (N_HELDOUT_BULKY, --p-bulky 1), CHGJ015 and STS_001 (the 0.2.0 card's "real cases"), CHGJ015 at
# the automatic ROI (real_auto; these three are select_model.py's selection sets), the five real
# head-and-neck cases (CHGJ015 and the four hecktor2020_lowres cases) with the ROI at the GTVp
# centroid (the paper's protocol) and with the automatic ROI (what a user without an ROI gets),
# the same with the first positive click a 40 % SUVmax threshold click (THRESHOLD_START=1), and the
# sarcoma cases the default model never trained on (STS_041, STS_043, STS_048, STS_051). Each run's
# table.md has the one-click PET threshold floor per case. REGION_REMOVAL=0 evaluates the networks
# alone; SELECTION_ONLY=1 stops after the three selection sets (what select_model.py decides on).
#   MODEL=runs/default_model/package OUT_DIR=runs/eval bash scripts/evaluate_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-InteractiveRefine/Resources/Models/default}
OUT_DIR=${OUT_DIR:-runs/eval_default}
DATA=${INTERACTIVE_REFINE_DATA:-$(cd .. && pwd)/shared/data}
SHAPE=${SHAPE:-72}
SPACING=${SPACING:-2}
N_HELDOUT=${N_HELDOUT:-6}
N_HELDOUT_BULKY=${N_HELDOUT_BULKY:-4}
SARCOMA_HELDOUT=${SARCOMA_HELDOUT:-STS_041,STS_043,STS_048,STS_051}
THRESHOLD_START=${THRESHOLD_START:-1}
REGION_REMOVAL=${REGION_REMOVAL:-1}
SELECTION_ONLY=${SELECTION_ONLY:-0}
EXTRA=()
if [ "$REGION_REMOVAL" = 0 ]; then EXTRA=(--no-region-removal); fi
PY=${PYTHON:-python3}
TRAIN="$PY -m interactive_refine_training.cli"
mkdir -p "$OUT_DIR"

# evaluate DATA OUT [options]: the card's protocol (0-10 clicks x 3 seeds)
evaluate() {
  local data=$1 out=$2
  shift 2
  $TRAIN evaluate --model "default=$MODEL" --data "$data" --clicks 10 --seeds 3 "${EXTRA[@]}" --out "$out" "$@"
}
# heldout OUT N SEED PREFIX [options]: phantoms never used in training
heldout() {
  local out=$1 n=$2 seed=$3 prefix=$4
  shift 4
  $TRAIN phantoms --out "$out" --n "$n" --seed "$seed" --shape "$SHAPE" --spacing "$SPACING" \
    --pet-spacing 4 --prefix "$prefix" "$@"
}

heldout "$OUT_DIR/heldout_phantoms" "$N_HELDOUT" 900000 HO
evaluate "$OUT_DIR/heldout_phantoms" "$OUT_DIR/phantoms"
if [ "$N_HELDOUT_BULKY" -gt 0 ]; then
  heldout "$OUT_DIR/heldout_bulky_phantoms" "$N_HELDOUT_BULKY" 910000 HB --p-bulky 1
  evaluate "$OUT_DIR/heldout_bulky_phantoms" "$OUT_DIR/bulky_phantoms"
fi
if [ -d "$DATA/hecktor2020_chgj015" ] && [ -d "$DATA/sts_petct" ]; then
  cat > "$OUT_DIR/real_cases.csv" <<CSV
id,ct,pet,label
CHGJ015,$DATA/hecktor2020_chgj015/CHGJ015_ct.nii.gz,$DATA/hecktor2020_chgj015/CHGJ015_pt.nii.gz,$DATA/hecktor2020_chgj015/CHGJ015_ct_gtvt.nii.gz
STS_001,$DATA/sts_petct/hecktor_layout/STS_001/STS_001__CT.nii.gz,$DATA/sts_petct/hecktor_layout/STS_001/STS_001__PT.nii.gz,$DATA/sts_petct/hecktor_layout/STS_001/STS_001.nii.gz
CSV
  evaluate "$OUT_DIR/real_cases.csv" "$OUT_DIR/real"
  # CHGJ015 at the automatic ROI: the selection set of what a user without an ROI gets
  grep -v '^STS_001,' "$OUT_DIR/real_cases.csv" > "$OUT_DIR/real_auto.csv"
  evaluate "$OUT_DIR/real_auto.csv" "$OUT_DIR/real_auto" --roi-center auto
fi
if [ "$SELECTION_ONLY" = 1 ]; then exit 0; fi
if [ -d "$DATA/hecktor2020_chgj015" ] && [ -d "$DATA/hecktor2020_lowres" ]; then
  $TRAIN manifest --out "$OUT_DIR/real_hn.csv" --data "$DATA/hecktor2020_chgj015" --data "$DATA/hecktor2020_lowres"
  evaluate "$OUT_DIR/real_hn.csv" "$OUT_DIR/real_hn" --roi-center label
  evaluate "$OUT_DIR/real_hn.csv" "$OUT_DIR/real_hn_auto" --roi-center auto
  if [ "$THRESHOLD_START" = 1 ]; then
    evaluate "$OUT_DIR/real_hn.csv" "$OUT_DIR/real_hn_threshold_start" --roi-center label --threshold-start
  fi
else
  echo "real head-and-neck cases not found under $DATA: set INTERACTIVE_REFINE_DATA" >&2
fi
if [ -d "$DATA/sts_ibsi" ]; then
  evaluate "$DATA/sts_ibsi" "$OUT_DIR/heldout_sarcoma" --cases "$SARCOMA_HELDOUT"
fi
