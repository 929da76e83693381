#!/usr/bin/env bash
# Prepare, on the build machine, the two git-ignored folders that scripts/gpu_default_model.sh carries
# to a lent GPU, so that the GPU is spent in one call:
#   .whl                 the monai and nibabel wheels for the device's Python 3.12 (its image has torch,
#                        numpy, scipy and safetensors but no monai or SimpleITK);
#   .gpu_data/sts_ibsi   the real sarcoma training cases (never the HOLDOUT ones), as many as fit, in
#                        name order, beside the tracked tree and the wheels in the LIMIT_MB a call may carry.
# Then: the device tool's run with carry [".whl", ".gpu_data"] and the command printed at the end.
#   bash scripts/gpu_carry.sh            (SKIP_WHEELS=1 keeps .whl as it is; ROOT=DIR writes there)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${INTERACTIVE_REFINE_DATA:-$(cd .. && pwd)/shared/data}
HOLDOUT=${HOLDOUT:-STS_041,STS_043,STS_048,STS_051}
LIMIT_MB=${LIMIT_MB:-62}
ROOT=${ROOT:-.}
WHEELS=${WHEELS:-monai==1.5.2 nibabel==5.4.2}
if [ ! -d "$DATA/sts_ibsi" ]; then
  echo "no sts_ibsi under $DATA: set INTERACTIVE_REFINE_DATA to the shared data folder" >&2
  exit 1
fi
if [ -z "${SKIP_WHEELS:-}" ]; then
  rm -rf "$ROOT/.whl"
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$ROOT/.whl" $WHEELS
fi
bytes() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
wheels=0
if [ -d "$ROOT/.whl" ]; then wheels=$(bytes "$ROOT/.whl"); fi
room=$(( LIMIT_MB * 1024 * 1024 - tracked - wheels ))
rm -rf "$ROOT/.gpu_data"
mkdir -p "$ROOT/.gpu_data/sts_ibsi"
taken=() left=()
for case_dir in "$DATA"/sts_ibsi/*/; do
  case_id=$(basename "$case_dir")
  if [[ ",$HOLDOUT," == *",$case_id,"* ]]; then continue; fi
  size=$(bytes "$case_dir")
  if [ "$size" -le "$room" ]; then
    cp -r "$case_dir" "$ROOT/.gpu_data/sts_ibsi/$case_id"
    room=$(( room - size ))
    taken+=("$case_id")
  else
    left+=("$case_id")
  fi
done
echo "tracked tree $(( tracked / 1048576 )) MiB, wheels $(( wheels / 1048576 )) MiB, ${#taken[@]} training cases carried" \
  "(${taken[*]:-none}); left out for room: ${left[*]:-none}; held out: $HOLDOUT"
echo "device call: carry [\".whl\", \".gpu_data\"], command: OUT=\$OUT BUDGET_S=540 bash scripts/gpu_default_model.sh"
