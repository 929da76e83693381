"""``evaluate --roi-center``: the ROI of every case at the GTVp centroid (the paper's protocol,
the default), where a user without an ROI gets it (``auto``) or at the CT's centre (``ct``)."""
from __future__ import annotations

import json

import pytest
from interactive_refine_training.cli import main
from interactive_refine_training.evaluate import run_evaluation
from InteractiveRefineLib.cases import find_cases
from InteractiveRefineLib.model_package import create_random_model_package, load_model_package
from InteractiveRefineLib.networks import TINY_NETWORK, TINY_ROI
from training_helpers import phantom_data


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return create_random_model_package(tmp_path_factory.mktemp("tiny") / "model", network=TINY_NETWORK,
                                       roi_size_vox=TINY_ROI, seed=0)


def test_evaluate_records_where_the_roi_went(tiny_model, tmp_path, capsys):
    case_id = find_cases(phantom_data())[0].case_id
    base = ["-q", "evaluate", "--model", f"tiny={tiny_model}", "--data", str(phantom_data()), "--cases",
            case_id, "--clicks", "0", "--seeds", "1", "--device", "cpu", "--no-surface"]
    for choice in ("label", "auto", "ct"):
        out = tmp_path / choice
        extra = [] if choice == "label" else ["--roi-center", choice]
        assert main(base + extra + ["--out", str(out)]) == 0
        assert json.loads((out / "summary.json").read_text())["roi_center"] == choice
    with pytest.raises(SystemExit) as exit_info:
        main(base + ["--roi-center", "middle", "--out", str(tmp_path / "bad")])
    assert exit_info.value.code == 2 and "invalid choice: 'middle'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"roi_center must be one of \('label', 'auto', 'ct'\)"):
        run_evaluation({"tiny": load_model_package(tiny_model)}, [], 0, [0], device="cpu",
                       roi_center="middle")


def test_evaluate_records_the_local_edit_options(tiny_model, tmp_path):
    """``--[no-]local-edits-positive`` and ``--[no-]local-edits`` reach the sessions and the summary
    (None: as the card says)."""
    case_id = find_cases(phantom_data())[0].case_id
    base = ["-q", "evaluate", "--model", f"tiny={tiny_model}", "--data", str(phantom_data()), "--cases",
            case_id, "--clicks", "1", "--seeds", "1", "--device", "cpu", "--no-surface"]
    for extra, expected in (([], (None, None)), (["--local-edits-positive"], (None, True)),
                            (["--no-local-edits", "--no-local-edits-positive"], (False, False))):
        out = tmp_path / "_".join(extra or ["card"])
        assert main(base + extra + ["--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["local_edits"], summary["local_edits_positive"]) == expected
