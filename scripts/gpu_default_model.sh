#!/usr/bin/env bash
# The one prepared command for a lent GPU (about 9 minutes of device time in all):
#   0. the device click path's tests (pytest, on the GPU: they skip on a CPU);
#   1. the GPU click-latency benchmark (the paper-size random model at 144^3 and the shipped model);
#   2. the default model trained within what is left of the budget: scripts/train_default_model.sh
#      with training/configs/gpu_default.json on phantoms plus the real sarcoma cases (less HOLDOUT);
#   3. the model package, the training summaries and every figure copied to $OUT.
# Usage on the device machine, in the repository root (the device tool's `run`, carrying .whl and
# .gpu_data, both git-ignored, which `bash scripts/gpu_carry.sh` prepares here first):
#   OUT=$OUT BUDGET_S=540 bash scripts/gpu_default_model.sh
# TRAINED_144 (default runs/mm1/package, carried too when present): a trained 144^3 model at 1 mm, timed
# with its clicks replayed against float32 whole-ROI (benchmarks/README.md, "The models measured").
# .whl holds the monai and nibabel wheels for the device's Python (its image has torch, numpy, scipy,
# safetensors but no monai or SimpleITK: NIfTI is then read with nibabel); .gpu_data/sts_ibsi a copy
# of ../shared/data/sts_ibsi. DEVICE=cpu and small N_PHANTOMS / *_EPOCHS rehearse it on a CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
BUDGET_S=${BUDGET_S:-540}
DEVICE=${DEVICE:-cuda}
REAL=${REAL:-.gpu_data/sts_ibsi}
HOLDOUT=${HOLDOUT:-STS_041,STS_043,STS_048,STS_051}
N_PHANTOMS=${N_PHANTOMS:-100}
LATENCY_MODES=${LATENCY_MODES:-full+host,full,auto}
LATENCY_CLICKS=${LATENCY_CLICKS:-10}
LATENCY_MODEL=${LATENCY_MODEL:---random-paper-model}
LATENCY_PAPER_MODES=${LATENCY_PAPER_MODES:-full+host,full,full+bf16,full+bf16+compile}
TRAINED_144=${TRAINED_144:-runs/mm1/package}
LATENCY_TRAINED_MODES=${LATENCY_TRAINED_MODES:-full,full+host,full+bf16,full+bf16+compile}
INITIAL_EPOCHS=${INITIAL_EPOCHS:-20}
REFINE_EPOCHS=${REFINE_EPOCHS:-10}
REFINE_ITERATIONS=${REFINE_ITERATIONS:-25}
WORKERS=${WORKERS:-6}
REFINE_LR=${REFINE_LR:-0.0001}
SKIP_LATENCY=${SKIP_LATENCY:-}
RUNS=${RUNS:-runs/gpu_default}
start=$(date +%s)
mkdir -p "$OUT"
LOG="$OUT/gpu_run.log"
log() { echo "[$(( $(date +%s) - start )) s] $*" | tee -a "$LOG"; }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl >>"$LOG" 2>&1 || { log "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/InteractiveRefine:$PWD/training${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python3 -c "import torch, monai; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, 'monai', monai.__version__)"
} >>"$LOG" 2>&1

if [ -z "$SKIP_LATENCY" ]; then
log "0. the device click path's tests on $DEVICE (CuPy region removal, device copies, two classes)"
timeout 120 python3 -m pytest -q -p no:cacheprovider Testing/engine/test_device_click_path.py \
  "Testing/engine/test_multiclass.py::test_device_resident_path_with_two_classes" -rs >"$OUT/gpu_tests.log" 2>&1 \
  || log "device tests failed or timed out (see gpu_tests.log)"
log "1. click latency on $DEVICE (paper-size random model, 144^3)"
timeout 120 python3 benchmarks/click_latency.py --device "$DEVICE" $LATENCY_MODEL --case phantom --no-replay \
  --clicks "$LATENCY_CLICKS" --modes "$LATENCY_PAPER_MODES" --json "$OUT/latency_paper.json" >>"$LOG" 2>&1 \
  || log "latency (paper model) failed or timed out"
if [ -d "$TRAINED_144" ]; then  # a trained 144^3 model (carried: runs/ is git-ignored), replayed for Dice
  log "   click latency on $DEVICE (trained 144^3 model $TRAINED_144)"
  timeout 100 python3 benchmarks/click_latency.py --device "$DEVICE" --model "$TRAINED_144" --case phantom \
    --clicks "$LATENCY_CLICKS" --modes "$LATENCY_TRAINED_MODES" --json "$OUT/latency_trained144.json" >>"$LOG" 2>&1 \
    || log "latency (trained 144^3 model) failed or timed out"
fi
log "   click latency on $DEVICE (shipped model)"
timeout 45 python3 benchmarks/click_latency.py --device "$DEVICE" --case phantom --clicks "$LATENCY_CLICKS" --no-replay \
  --modes "$LATENCY_MODES" --json "$OUT/latency_shipped.json" >>"$LOG" 2>&1 || log "latency (shipped) failed"
fi

left=$(( BUDGET_S - ($(date +%s) - start) - 60 ))  # 60 s: phantoms, cache, export, copies
if [ "$left" -lt 60 ]; then log "no time left to train ($left s)"; exit 0; fi
minutes() { python3 -c "print(round($1 * $left / 60.0, 2))"; }
log "2. training: $left s for the two stages"
OUT_DIR="$RUNS" CONFIG="${CONFIG:-training/configs/gpu_default.json}" N_PHANTOMS="$N_PHANTOMS" SHAPE=72 SPACING=2 \
  PET_SPACING=4 WORKERS="$WORKERS" FOLDS=10 EXTRA_DATA="$REAL" EXTRA_HOLDOUT="$HOLDOUT" \
  INITIAL_MINUTES="$(minutes 0.45)" INITIAL_EPOCHS="$INITIAL_EPOCHS" \
  REFINE_MINUTES="$(minutes 0.55)" REFINE_EPOCHS="$REFINE_EPOCHS" REFINE_ITERATIONS="$REFINE_ITERATIONS" \
  REFINE_LR="$REFINE_LR" PACKAGE="$RUNS/package" bash scripts/train_default_model.sh >>"$LOG" 2>&1 \
  || log "training failed"

log "3. copying results"
mkdir -p "$OUT/package"
cp "$RUNS"/package/* "$OUT/package/" 2>/dev/null || log "no package"
python3 - "$RUNS" "$OUT/training.json" <<'PY' || log "no training summary"
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
out = {}
for stage in ("initial", "refine"):
    folder = runs / stage
    if (folder / "summary.json").is_file():
        out[stage] = {"summary": json.loads((folder / "summary.json").read_text()),
                      "history": json.loads((folder / "history.json").read_text())
                      if (folder / "history.json").is_file() else None}
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
PY
log "done"
