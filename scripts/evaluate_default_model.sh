#!/usr/bin/env bash
# Evaluate a model package (default: the shipped one) the way its card reports it:
# 0-10 simulated clicks x 3 seeds with the paper's simulated user, full-ROI refinement,
# on held-out phantoms (seeds never used in training), on held-out bulky-tumour phantoms
# (--p-bulky 1, like the 365 mL sarcoma) and on the real cases CHGJ015 and STS_001.
# REGION_REMOVAL=0 evaluates the networks alone (a negative click does not remove the whole
# region it lands on; see InteractiveRefineLib/click_regions.py).
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
REGION_REMOVAL=${REGION_REMOVAL:-1}
EXTRA=()
if [ "$REGION_REMOVAL" = 0 ]; then EXTRA=(--no-region-removal); fi
PY=${PYTHON:-python3}
TRAIN="$PY -m interactive_refine_training.cli"
mkdir -p "$OUT_DIR"

$TRAIN phantoms --out "$OUT_DIR/heldout_phantoms" --n "$N_HELDOUT" --seed 900000 --shape "$SHAPE" \
  --spacing "$SPACING" --pet-spacing 4 --prefix HO
$TRAIN evaluate --model "default=$MODEL" --data "$OUT_DIR/heldout_phantoms" --clicks 10 --seeds 3 \
  "${EXTRA[@]}" --out "$OUT_DIR/phantoms"
if [ "$N_HELDOUT_BULKY" -gt 0 ]; then
  $TRAIN phantoms --out "$OUT_DIR/heldout_bulky_phantoms" --n "$N_HELDOUT_BULKY" --seed 910000 \
    --shape "$SHAPE" --spacing "$SPACING" --pet-spacing 4 --prefix HB --p-bulky 1
  $TRAIN evaluate --model "default=$MODEL" --data "$OUT_DIR/heldout_bulky_phantoms" --clicks 10 --seeds 3 \
    "${EXTRA[@]}" --out "$OUT_DIR/bulky_phantoms"
fi
if [ -d "$DATA/hecktor2020_chgj015" ]; then
  cat > "$OUT_DIR/real_cases.csv" <<CSV
id,ct,pet,label
CHGJ015,$DATA/hecktor2020_chgj015/CHGJ015_ct.nii.gz,$DATA/hecktor2020_chgj015/CHGJ015_pt.nii.gz,$DATA/hecktor2020_chgj015/CHGJ015_ct_gtvt.nii.gz
STS_001,$DATA/sts_petct/hecktor_layout/STS_001/STS_001__CT.nii.gz,$DATA/sts_petct/hecktor_layout/STS_001/STS_001__PT.nii.gz,$DATA/sts_petct/hecktor_layout/STS_001/STS_001.nii.gz
CSV
  $TRAIN evaluate --model "default=$MODEL" --data "$OUT_DIR/real_cases.csv" --clicks 10 --seeds 3 \
    "${EXTRA[@]}" --out "$OUT_DIR/real"
else
  echo "real cases not found under $DATA: set INTERACTIVE_REFINE_DATA" >&2
fi
