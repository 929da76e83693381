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
# Optional real cases trained beside the phantoms: a case folder (HECKTOR layout) and the ids kept out
# of training for evaluation (comma-separated). Phantoms and these cases are sampled uniformly per case,
# so the real share of training iterations is N_REAL / (N_PHANTOMS + N_REAL).
EXTRA_DATA=${EXTRA_DATA:-}
EXTRA_HOLDOUT=${EXTRA_HOLDOUT:-}
REFINE_ITERATIONS=${REFINE_ITERATIONS:-50}
PY=${PYTHON:-python3}
TRAIN="$PY -m interactive_refine_training.cli"

# phantoms OUT SEED [options]
phantoms() {
  local out=$1 seed=$2
  shift 2
  $TRAIN phantoms --out "$out" --n "$N_PHANTOMS" --seed "$seed" --shape "$SHAPE" --spacing "$SPACING" \
    --pet-spacing "$PET_SPACING" --workers "$WORKERS" "$@"
}
# train STAGE DATA OUT MINUTES EPOCHS LR [options]  (empty EPOCHS / LR: the config's)
train() {
  local stage=$1 data=$2 out=$3 minutes=$4 epochs=$5 lr=$6
  shift 6
  $TRAIN train --stage "$stage" --data "$data" --out "$out" --config "$CONFIG" --n-folds "$FOLDS" \
    --max-minutes "$minutes" --workers "$WORKERS" ${epochs:+--max-epochs "$epochs"} ${lr:+--lr "$lr"} "$@"
}
REFINE_OPTS=(--iterations-per-epoch "$REFINE_ITERATIONS")

phantoms "$OUT_DIR/phantoms" "$PHANTOM_SEED"
DATA="$OUT_DIR/phantoms"
if [ -n "$EXTRA_DATA" ]; then  # one CSV manifest of the phantoms and the real training cases
  DATA="$OUT_DIR/train_cases.csv"
  $PY -m interactive_refine_training.cli manifest --out "$DATA" --data "$OUT_DIR/phantoms" \
    --data "$EXTRA_DATA" ${EXTRA_HOLDOUT:+--exclude "$EXTRA_HOLDOUT"}
fi
train initial "$DATA" "$OUT_DIR/initial" "$INITIAL_MINUTES" "$INITIAL_EPOCHS" ""
INITIAL="$OUT_DIR/initial"
train refine "$DATA" "$OUT_DIR/refine" "$REFINE_MINUTES" "$REFINE_EPOCHS" "$REFINE_LR" \
  --initial "$INITIAL" "${REFINE_OPTS[@]}"
REFINED="$OUT_DIR/refine"
if [ -n "$REFINE2_MINUTES" ]; then
  train refine "$OUT_DIR/phantoms" "$OUT_DIR/refine2" "$REFINE2_MINUTES" "$REFINE2_EPOCHS" "$REFINE2_LR" \
    --initial "$INITIAL" --init-weights "$REFINED" "${REFINE_OPTS[@]}"
  REFINED="$OUT_DIR/refine2"
fi
if [ -n "$FT_P_BULKY" ]; then
  phantoms "$OUT_DIR/phantoms_ft" "$FT_PHANTOM_SEED" --p-bulky "$FT_P_BULKY"
  train initial "$OUT_DIR/phantoms_ft" "$OUT_DIR/initial_ft" "$FT_INITIAL_MINUTES" "$FT_INITIAL_EPOCHS" \
    "$FT_INITIAL_LR" --init-weights "$INITIAL"
  INITIAL="$OUT_DIR/initial_ft"
  train refine "$OUT_DIR/phantoms_ft" "$OUT_DIR/refine_ft" "$FT_REFINE_MINUTES" "$FT_REFINE_EPOCHS" \
    "$FT_REFINE_LR" --initial "$INITIAL" --init-weights "$REFINED" "${REFINE_OPTS[@]}"
  REFINED="$OUT_DIR/refine_ft"
  if [ -n "$FT_REFINE2_MINUTES" ]; then
    train refine "$OUT_DIR/phantoms_ft" "$OUT_DIR/refine_ft2" "$FT_REFINE2_MINUTES" "$FT_REFINE2_EPOCHS" \
      "$FT_REFINE2_LR" --initial "$INITIAL" --init-weights "$REFINED" "${REFINE_OPTS[@]}"
    REFINED="$OUT_DIR/refine_ft2"
  fi
fi
$TRAIN export --initial "$INITIAL" --refine "$REFINED" --out "$PACKAGE" --half \
  --name interactive-refine-default
