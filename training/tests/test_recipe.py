"""The default model's recipe (``scripts/train_default_model.sh``) runs end to end at tiny scale,
with every optional stage of the shipped model: the second refine run and the fine-tuning
stage on bulky-tumour phantoms (two refine runs), and its package records that history."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from InteractiveRefineLib.model_package import load_model_package
from training_helpers import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def test_recipe_with_every_stage_exports_the_fine_tuned_networks(tmp_path):
    out = tmp_path / "model"
    env = {
        **os.environ, "HOME": str(tmp_path),  # the preprocessing cache goes under HOME
        "PYTHON": sys.executable, "OUT_DIR": str(out), "CONFIG": str(TINY_CONFIG),
        "N_PHANTOMS": "4", "SHAPE": "40", "SPACING": "1.5", "WORKERS": "1", "FOLDS": "2",
        "INITIAL_MINUTES": "2", "INITIAL_EPOCHS": "1", "REFINE_MINUTES": "2", "REFINE_EPOCHS": "1",
        "REFINE_ITERATIONS": "2", "REFINE2_MINUTES": "2", "REFINE2_EPOCHS": "1",
        "FT_P_BULKY": "0.5", "FT_PHANTOM_SEED": "2000", "FT_INITIAL_EPOCHS": "1", "FT_REFINE_EPOCHS": "1",
        "FT_REFINE_LR": "0.0001", "FT_REFINE2_MINUTES": "2", "FT_REFINE2_EPOCHS": "1",
    }
    done = subprocess.run(["bash", str(ROOT / "scripts" / "train_default_model.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ft = json.loads((out / "phantoms_ft" / "phantoms.json").read_text())
    assert ft["parameters"]["p_bulky"] == 0.5 and ft["seed"] == 2000
    assert any(case["bulky"] for case in ft["cases"])
    package = load_model_package(out / "package")
    training = package.card["training"]
    # the package holds the fine-tuned networks, each started from the stage before it
    assert training["initial"][0]["run"] == str(out / "initial_ft")
    assert training["initial"][0]["init_weights"] == str(out / "initial")
    assert training["refine"][0]["run"] == str(out / "refine_ft2")
    assert training["refine"][0]["init_weights"] == str(out / "refine_ft")
    assert training["phantoms"]["parameters"]["p_bulky"] == 0.5
    first_ft = json.loads((out / "refine_ft" / "summary.json").read_text())
    assert first_ft["init_weights"] == str(out / "refine2")
