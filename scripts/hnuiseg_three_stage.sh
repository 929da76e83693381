#!/usr/bin/env bash
# HN-UISeg's three-stage protocol (its section 2.2) with this package's two networks, then the package:
#   1. --stage prompt:  pre-training; the click channels hold prompts drawn from the truth with
#                       probability 0.5 (one positive click per connected component and class, as
#                       many random negatives), no previous mask                     (HN-UISeg stage 1)
#   2. --stage initial: automatic fine-tuning, no prompts, started from stage 1      (HN-UISeg stage 2)
#   3. --stage refine:  interactive fine-tuning with the hnuiseg user (clicks on the per-class,
#                       per-component errors), started from stage 1, stage 2 as the
#                       frozen initial model                                          (HN-UISeg stage 3)
#   4. export:          stage 2 as the initial member, stage 3 as the refine member
# HN-UISeg pre-trains on public data (HECKTOR 2022, H&N1) and fine-tunes on its own cohort:
# PRETRAIN_DATA and DATA (case folders or CSV manifests) may differ. Extra arguments go to all
# three train commands (e.g. --max-minutes 60 --device cuda). Everything can be set through the
# environment, e.g. a quick CPU check on phantoms:
#   PRETRAIN_DATA=/tmp/ph DATA=/tmp/ph CONFIG=training/configs/ci_tiny_multiclass.json \
#   OUT_DIR=/tmp/hn3 bash scripts/hnuiseg_three_stage.sh --max-epochs 1
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA to the fine-tuning cases (folder or manifest)}
PRETRAIN_DATA=${PRETRAIN_DATA:-$DATA}
OUT_DIR=${OUT_DIR:-runs/hnuiseg_three_stage}
CONFIG=${CONFIG:-training/configs/hnuiseg_three_stage.json}
FOLD=${FOLD:-0}
NAME=${NAME:-hnuiseg-three-stage}
PY=${PYTHON:-python3}
TRAIN="$PY -m interactive_refine_training.cli"
common=(--config "$CONFIG" --fold "$FOLD")

$TRAIN train --stage prompt --data "$PRETRAIN_DATA" --out "$OUT_DIR/stage1_prompt" "${common[@]}" "$@"
$TRAIN train --stage initial --data "$DATA" --out "$OUT_DIR/stage2_initial" "${common[@]}" \
  --init-weights "$OUT_DIR/stage1_prompt" "$@"
$TRAIN train --stage refine --data "$DATA" --out "$OUT_DIR/stage3_refine" "${common[@]}" \
  --initial "$OUT_DIR/stage2_initial" --init-weights "$OUT_DIR/stage1_prompt" \
  --set interaction.simulated_user=hnuiseg "$@"
$TRAIN export --initial "$OUT_DIR/stage2_initial" --refine "$OUT_DIR/stage3_refine" \
  --out "$OUT_DIR/package" --name "$NAME"
