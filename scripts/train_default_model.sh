#!/usr/bin/env bash
# Retrain the shipped default model from scratch with the training package's real protocol:
# phantoms -> initial model -> refinement model -> model package (-> evaluation, see README).
# The defaults train the paper-size network on one GPU within an ~8-minute budget (planned, not yet run);
# every setting can be overridden through the environment. The shipped CPU model was made with
# (README, "The default model"; about 3.5 h on 2 CPU cores):
#   CONFIG=training/configs/default_model_cpu.json N_PHANTOMS=300 SHAPE=72 SPACING=2 WORKERS=1 \
#   INITIAL_MINUTES=40 INITIAL_EPOCHS=48 \
#   REFINE_MINUTES=50 REFINE_EPOCHS=22 REFINE_ITERATIONS=15 REFINE_LR=0.0003 \
#   REFINE2_MINUTES=55 REFINE2_EPOCHS=22 REFINE2_LR=0.0002 \
#   FT_P_BULKY=0.3 FT_INITIAL_MINUTES=14 FT_INITIAL_EPOCHS=14 FT_INITIAL_LR=0.0003 \
#   FT_REFINE_MINUTES=32 FT_REFINE_EPOCHS=22 FT_REFINE_LR=0.0002 \
#   FT_REFINE2_MINUTES=42 FT_REFINE2_EPOCHS=26 FT_REFINE2_LR=0.0001 bash scripts/train_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-runs/default_model}
PACKAGE=${PACKAGE:-$OUT_DIR/package}
CONFIG=${CONFIG:-training/configs/gpu_quick.json}
N_PHANTOMS=${N_PHANTOMS:-200}
PHANTOM_SEED=${PHANTOM_SEED:-1000}
SHAPE=${SHAPE:-144}
SPACING=${SPACING:-1}
PET_SPACING=${PET_SPACING:-4}
WORKERS=${WORKERS:-12}
INITIAL_MINUTES=${INITIAL_MINUTES:-3.3}
REFINE_MINUTES=${REFINE_MINUTES:-3.7}
FOLDS=${FOLDS:-10}
# Optional epoch counts: with a wall-clock budget, set them to what fits so the cosine schedule anneals.
INITIAL_EPOCHS=${INITIAL_EPOCHS:-}
REFINE_EPOCHS=${REFINE_EPOCHS:-}
REFINE_ITERATIONS=${REFINE_ITERATIONS:-50}
# Optional learning rate of the refine stage (it starts from the trained initial network: fine-tuning).
REFINE_LR=${REFINE_LR:-}
# Optional second refine run (a warm restart of the cosine schedule): it starts from the first
# refine run's best weights; set REFINE2_MINUTES to enable it (REFINE2_EPOCHS, REFINE2_LR likewise).
REFINE2_MINUTES=${REFINE2_MINUTES:-}
REFINE2_EPOCHS=${REFINE2_EPOCHS:-}
REFINE2_LR=${REFINE2_LR:-}
# Optional fine-tuning stage on a second phantom set with bulky tumours (generator --p-bulky): both
# networks continue from the runs above; set FT_P_BULKY to enable it (FT_* below likewise).
FT_P_BULKY=${FT_P_BULKY:-}
FT_PHANTOM_SEED=${FT_PHANTOM_SEED:-$PHANTOM_SEED}
FT_INITIAL_MINUTES=${FT_INITIAL_MINUTES:-$INITIAL_MINUTES}
FT_INITIAL_EPOCHS=${FT_INITIAL_EPOCHS:-}
FT_INITIAL_LR=${FT_INITIAL_LR:-}
FT_REFINE_MINUTES=${FT_REFINE_MINUTES:-$REFINE_MINUTES}
FT_REFINE_EPOCHS=${FT_REFINE_EPOCHS:-}
FT_REFINE_LR=${FT_REFINE_LR:-}
# ... and an optional second refine run there (a warm restart from the first; FT_REFINE2_MINUTES enables it)
FT_REFINE2_MINUTES=${FT_REFINE2_MINUTES:-}
FT_REFINE2_EPOCHS=${FT_REFINE2_EPOCHS:-}
FT_REFINE2_LR=${FT_REFINE2_LR:-}
PY=${PYTHON:-python3}
TRAIN="$PY -m interactive_refine_training.cli"

$TRAIN phantoms --out "$OUT_DIR/phantoms" --n "$N_PHANTOMS" --seed "$PHANTOM_SEED" --shape "$SHAPE" \
  --spacing "$SPACING" --pet-spacing "$PET_SPACING" --workers "$WORKERS"
$TRAIN train --stage initial --data "$OUT_DIR/phantoms" --out "$OUT_DIR/initial" --config "$CONFIG" \
  --n-folds "$FOLDS" --max-minutes "$INITIAL_MINUTES" --workers "$WORKERS" \
  ${INITIAL_EPOCHS:+--max-epochs "$INITIAL_EPOCHS"}
$TRAIN train --stage refine --data "$OUT_DIR/phantoms" --out "$OUT_DIR/refine" --config "$CONFIG" \
  --n-folds "$FOLDS" --initial "$OUT_DIR/initial" --max-minutes "$REFINE_MINUTES" --workers "$WORKERS" \
  --iterations-per-epoch "$REFINE_ITERATIONS" ${REFINE_EPOCHS:+--max-epochs "$REFINE_EPOCHS"} \
  ${REFINE_LR:+--lr "$REFINE_LR"}
REFINED="$OUT_DIR/refine"
if [ -n "$REFINE2_MINUTES" ]; then
  $TRAIN train --stage refine --data "$OUT_DIR/phantoms" --out "$OUT_DIR/refine2" --config "$CONFIG" \
    --n-folds "$FOLDS" --initial "$OUT_DIR/initial" --init-weights "$OUT_DIR/refine" \
    --max-minutes "$REFINE2_MINUTES" --workers "$WORKERS" --iterations-per-epoch "$REFINE_ITERATIONS" \
    ${REFINE2_EPOCHS:+--max-epochs "$REFINE2_EPOCHS"} ${REFINE2_LR:+--lr "$REFINE2_LR"}
  REFINED="$OUT_DIR/refine2"
fi
INITIAL="$OUT_DIR/initial"
if [ -n "$FT_P_BULKY" ]; then
  $TRAIN phantoms --out "$OUT_DIR/phantoms_ft" --n "$N_PHANTOMS" --seed "$FT_PHANTOM_SEED" --shape "$SHAPE" \
    --spacing "$SPACING" --pet-spacing "$PET_SPACING" --workers "$WORKERS" --p-bulky "$FT_P_BULKY"
  $TRAIN train --stage initial --data "$OUT_DIR/phantoms_ft" --out "$OUT_DIR/initial_ft" --config "$CONFIG" \
    --n-folds "$FOLDS" --init-weights "$INITIAL" --max-minutes "$FT_INITIAL_MINUTES" --workers "$WORKERS" \
    ${FT_INITIAL_EPOCHS:+--max-epochs "$FT_INITIAL_EPOCHS"} ${FT_INITIAL_LR:+--lr "$FT_INITIAL_LR"}
  $TRAIN train --stage refine --data "$OUT_DIR/phantoms_ft" --out "$OUT_DIR/refine_ft" --config "$CONFIG" \
    --n-folds "$FOLDS" --initial "$OUT_DIR/initial_ft" --init-weights "$REFINED" \
    --max-minutes "$FT_REFINE_MINUTES" --workers "$WORKERS" --iterations-per-epoch "$REFINE_ITERATIONS" \
    ${FT_REFINE_EPOCHS:+--max-epochs "$FT_REFINE_EPOCHS"} ${FT_REFINE_LR:+--lr "$FT_REFINE_LR"}
  INITIAL="$OUT_DIR/initial_ft"
  REFINED="$OUT_DIR/refine_ft"
  if [ -n "$FT_REFINE2_MINUTES" ]; then
    $TRAIN train --stage refine --data "$OUT_DIR/phantoms_ft" --out "$OUT_DIR/refine_ft2" --config "$CONFIG" \
      --n-folds "$FOLDS" --initial "$INITIAL" --init-weights "$REFINED" \
      --max-minutes "$FT_REFINE2_MINUTES" --workers "$WORKERS" --iterations-per-epoch "$REFINE_ITERATIONS" \
      ${FT_REFINE2_EPOCHS:+--max-epochs "$FT_REFINE2_EPOCHS"} ${FT_REFINE2_LR:+--lr "$FT_REFINE2_LR"}
    REFINED="$OUT_DIR/refine_ft2"
  fi
fi
$TRAIN export --initial "$INITIAL" --refine "$REFINED" --out "$PACKAGE" --half \
  --name interactive-refine-default
