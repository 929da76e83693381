"""``evaluate --uncertainty N``: the calibration of the uncertainty per case, at 0 clicks and after the
last click (a tiny random package on two phantoms)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from interactive_refine_training.cli import main
from interactive_refine_training.data import roi_center_ras
from InteractiveRefineLib.cases import find_cases
from InteractiveRefineLib.geometry import inside_mask, read_volume
from InteractiveRefineLib.model_package import create_random_model_package, load_model_package
from InteractiveRefineLib.networks import TINY_NETWORK, TINY_ROI
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.simulation import truth_on_grid
from InteractiveRefineLib.uncertainty import calibration, estimate
from training_helpers import phantom_data


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return create_random_model_package(tmp_path_factory.mktemp("tiny") / "model", network=TINY_NETWORK,
                                       roi_size_vox=TINY_ROI, seed=0)


def test_evaluate_reports_ece_and_error_auc_per_case(tiny_model, tmp_path):
    cases = find_cases(phantom_data())[:2]
    ids = [c.case_id for c in cases]
    assert main(["-q", "evaluate", "--model", f"tiny={tiny_model}", "--data", str(phantom_data()),
                 "--cases", ",".join(ids), "--clicks", "1", "--seeds", "2", "--device", "cpu",
                 "--no-surface", "--uncertainty", "2", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "per_case.csv")))
    at = {(r["case_id"], r["seed"], r["clicks"]): r for r in rows}
    for case_id in ids:
        zero = [float(at[(case_id, s, "0")]["ece"]) for s in ("0", "1")]
        assert zero[0] == zero[1] and 0.0 <= zero[0] <= 1.0  # 0 clicks: the same state for every seed
        assert all(at[(case_id, s, "1")]["ece"] != "" for s in ("0", "1"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["uncertainty_passes"] == 2
    per_case = summary["uncertainty_calibration"]["tiny"]
    assert sorted(per_case) == sorted(ids) and all(sorted(v) == ["0", "1"] for v in per_case.values())
    assert "Calibration of the uncertainty" in (tmp_path / "table.md").read_text()

    # the reported numbers are the engine's calibration of the 2-pass estimate at 0 clicks
    case = cases[0]
    ct, pet, label = read_volume(case.ct), read_volume(case.pet), read_volume(case.label)
    session = RefinementSession(load_model_package(tiny_model), device="cpu", refine_mode="full")
    session.set_image(ct, pet, roi_center_ras=roi_center_ras(ct, label, 1))
    session.initial()
    result = estimate(session, 2)
    expected = calibration(result.mean, result.entropy, truth_on_grid(label, session.grid, 1),
                           session.card.threshold, mask=inside_mask(session.ct.grid, session.grid))
    assert per_case[case.case_id]["0"]["ece"] == pytest.approx(expected["ece"], abs=1e-4)
    auc = per_case[case.case_id]["0"]["error_auc"]
    assert (auc is None and expected["error_auc"] is None) or auc == pytest.approx(expected["error_auc"],
                                                                                    abs=1e-4)


def test_without_uncertainty_nothing_changes(tiny_model, tmp_path):
    case_id = find_cases(phantom_data())[0].case_id
    assert main(["-q", "evaluate", "--model", f"tiny={tiny_model}", "--data", str(phantom_data()),
                 "--cases", case_id, "--clicks", "1", "--seeds", "1", "--device", "cpu", "--no-surface",
                 "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "per_case.csv")))
    assert all(r["ece"] == "" and r["error_auc"] == "" for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "uncertainty_calibration" not in summary and "uncertainty_passes" not in summary
    assert "Calibration" not in (tmp_path / "table.md").read_text()
    assert np.isfinite(float(rows[0]["dice"]))
