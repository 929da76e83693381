#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in .venv.
#   bash scripts/setup.sh          engine, CLI and training package
#   bash scripts/setup.sh --test   ... plus the test tools and slicer-core (real MRML for the module's tests)
# PyTorch is installed first and pinned, so nothing that depends on it pulls another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "torch==${TORCH_VERSION:-2.13.0}"
$PIP install -q -e ".[test]"
if [ -f training/pyproject.toml ]; then $PIP install -q -e training; fi
if [ "${1:-}" = "--test" ]; then
  $PIP install -q -e ".[test,slicer-core]"
fi
echo "environment ready: $(.venv/bin/python -c 'import torch, monai; print("torch", torch.__version__, "monai", monai.__version__)')"
