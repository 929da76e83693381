"""The shipped default model: a complete card, the default everywhere, and on the real
head-and-neck case it finds the tumour and reproduces the curve its card reports."""
from __future__ import annotations

import json

import numpy as np
import pytest
from InteractiveRefineLib.cli import main
from InteractiveRefineLib.model_package import DEFAULT_MODEL_DIR, load_model_package

from conftest import REPO, data_path

CHGJ = ("hecktor2020_chgj015",)


@pytest.fixture(scope="module")
def card() -> dict:
    return load_model_package().card  # verifies every weight file's checksum


def test_the_shipped_model_is_the_default_and_its_card_is_complete(card):
    package = load_model_package()
    assert package.path == DEFAULT_MODEL_DIR
    assert sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir()) < 25 * 1024**2
    use = card["intended_use"]
    assert "Research use only" in use and "synthetic" in use and "not for clinical decisions" in use
    assert card["license"] == "Apache-2.0"
    # The card states what the recipe trains: the CPU configuration's network and grid.
    config = json.loads((REPO / "training" / "configs" / "default_model_cpu.json").read_text())
    for key, value in config["network"].items():
        assert card["network"][key] == value, key
    assert card["preprocessing"]["roi_size_vox"] == config["data"]["roi_size_vox"]
    assert card["preprocessing"]["spacing_mm"] == config["data"]["spacing_mm"]
    trained_on = card["trained_on"]
    phantoms = pytest.importorskip("interactive_refine_training.phantoms")
    # The generator it was trained on: this one or an earlier version (the generator moves on).
    version = tuple(int(v) for v in trained_on["generator_version"].split("."))
    assert version <= tuple(int(v) for v in phantoms.GENERATOR_VERSION.split("."))
    held_out = trained_on["held_out_evaluation_seeds"]
    assert all(held_out[0] > last for _, last in trained_on["phantom_seeds"])  # never met in training
    # How it was made: the export that assembled the package from its networks, each stage's record.
    assert "export" in card["compute"]["recipe"] and "--unanchored" in card["compute"]["recipe"]
    assert package.spec.member_stages == ("initial", "refine", "unanchored")
    for stage in package.spec.member_stages:
        assert len(card["training"][stage]) == len(package.networks[stage]), stage
    # The refinement networks read the one-click threshold regions; real training cases are
    # sarcoma only (CC BY), never a case the card reports as held out.
    assert [s.name for s in package.spec.stages["refine"].inputs][-1] == "pet_region"
    assert "CC BY 3.0" in {source["licence"] for source in card["data_sources"]}
    assert trained_on["real_cases"] and all(c.startswith("STS_") for c in trained_on["real_cases"])
    for name, cases in (("heldout_phantoms", 6), ("real_auto", 1), ("real_hn", 5), ("real_hn_auto", 5),
                        ("heldout_sarcoma", 4)):
        metrics = card["metrics"][name]
        assert len(metrics["cases"]) == cases and metrics["seeds"] == 3
        assert len(metrics["dice_per_click"]) == len(metrics["hd95_mm_per_click"]) == 11
        assert "evaluate" in metrics["command"]
        assert not set(metrics["cases"]) & set(trained_on["real_cases"])


def _simulate_chgj015(tmp_path, *options, model=None, clicks: int = 3, roi: str = "label") -> dict:
    """``simulate --seed 0`` (full-ROI refinement) of ``model`` (None: the default) on CHGJ015 with the
    ROI on the GTVp centroid (``roi="label"``, the paper's protocol, at full precision) or ``"auto"``:
    its JSON."""
    from InteractiveRefineLib.geometry import read_volume
    from InteractiveRefineLib.simulation import label_centroid_ras

    folder = data_path(*CHGJ)
    if roi == "label":
        centre = label_centroid_ras(read_volume(folder / "CHGJ015_ct_gtvt.nii.gz"))
        roi = ",".join(repr(float(v)) for v in centre)
    out = tmp_path / "sim.json"
    assert main(["simulate", "--ct", str(folder / "CHGJ015_ct.nii.gz"),
                 "--pet", str(folder / "CHGJ015_pt.nii.gz"),
                 "--label", str(folder / "CHGJ015_ct_gtvt.nii.gz"), "--clicks", str(clicks), "--seed", "0",
                 "--device", "cpu", "--refine-mode", "full", *(["--model", str(model)] if model else []),
                 *options, f"--roi-center={roi}", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_simulate_on_the_real_case_reproduces_the_cards_curve(card, tmp_path):
    """`interactive-refine simulate` with the default model on CHGJ015 (ROI at the tumour) gives the
    evaluation's seed-0 curve recorded in the card, from a first mask that finds the tumour."""
    dice = _simulate_chgj015(tmp_path, clicks=5)["dice"]
    recorded = card["metrics"]["real_hn"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"]
    # The same computation as the card's evaluation (identical here; tolerance for other CPUs).
    assert dice == pytest.approx(recorded[:6], abs=0.01)
    # What a user sees: a first mask mostly on the tumour (0.4.1's covered hot normal tissue too,
    # 0.42), no threshold start (the first "tumour" click is refined), and clicks that improve it.
    assert card.get("threshold_start", False) is False
    assert dice[0] > 0.6 and max(dice[1:6]) >= 0.84
    assert np.all(np.isfinite(dice))


def test_at_the_automatic_roi_the_first_not_tumour_clicks_reject_hot_regions(card, tmp_path):
    """CHGJ015 with the automatic ROI: the first mask also holds hot tissue beside the tumour; the
    simulated user's first click is a "not tumour" one, answered by the card's unanchored stage,
    and the curve is the one the card records for that set (``real_auto``)."""
    result = _simulate_chgj015(tmp_path, clicks=5, roi="auto")
    dice = result["dice"]
    assert result["roi"]["method"] == "below_brain"
    assert result["clicks"][0]["positive"] is False and result["clicks"][0]["stage"] == "unanchored"
    assert all("stage" not in click for click in result["clicks"][1:])  # after the first "tumour" click
    recorded = card["metrics"]["real_auto"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"]
    assert dice == pytest.approx(recorded[:6], abs=0.01)
    assert dice[0] < 0.3 and dice[1] > dice[0] + 0.3  # one "not tumour" click removes most false regions


PET_REGION_MODEL = DEFAULT_MODEL_DIR.parent / "pet_region"


def test_the_pet_region_model_is_complete_and_reproduces_its_card_on_the_real_case(tmp_path):
    """The opt-in model trained on a GPU (phantoms and real sarcoma PET/CT, the one-click
    threshold regions as a refine input): its card names its data, licences and held-out cases,
    and `simulate` on CHGJ015 (ROI on the GTVp) gives the seed-0 curve the card records."""
    package = load_model_package(PET_REGION_MODEL)  # checksums verified
    card = package.card
    assert sum(f.stat().st_size for f in PET_REGION_MODEL.iterdir()) < 25 * 1024**2
    assert [s.name for s in package.spec.stages["refine"].inputs][-1] == "pet_region"
    assert "not for clinical decisions" in card["intended_use"] and card["license"] == "Apache-2.0"
    assert "CC BY 3.0" in {source["licence"] for source in card["data_sources"]}
    trained = set(card["trained_on"]["real_cases"])
    assert trained and not trained & set(card["metrics"]["heldout_sarcoma"]["cases"])
    assert not trained & set(card["metrics"]["real_hn"]["cases"])  # head-and-neck: evaluation only
    dice = _simulate_chgj015(tmp_path, model=PET_REGION_MODEL)["dice"]
    recorded = card["metrics"]["real_hn"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"]
    assert dice == pytest.approx(recorded[:4], abs=0.01)


GTVP_GTVN_MODEL = DEFAULT_MODEL_DIR.parent / "gtvp_gtvn"


def test_the_two_class_model_is_complete_and_reproduces_its_card_on_the_real_case(tmp_path):
    """The opt-in GTVp + GTVn model (phantoms only, MC dropout): two sigmoid outputs, a complete
    card, and `simulate --user hnuiseg` on CHGJ015 (ROI on the GTVp) gives the seed-0 curve and the
    GTVp curve its card records."""
    package = load_model_package(GTVP_GTVN_MODEL)  # checksums verified
    card = package.card
    assert package.spec.classes == ("gtvp", "gtvn") and package.spec.network["dropout"] == 0.05
    assert sum(f.stat().st_size for f in GTVP_GTVN_MODEL.iterdir()) < 25 * 1024**2
    assert "not for clinical decisions" in card["intended_use"]
    assert card["trained_on"]["generator_version"] == "1.3"
    result = _simulate_chgj015(tmp_path, "--user", "hnuiseg", model=GTVP_GTVN_MODEL)
    recorded = card["metrics"]["real_hn"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"]
    assert result["dice"] == pytest.approx(recorded[:4], abs=0.01)
    gtvp = result["dice_per_class"]["gtvp"]
    assert gtvp[0] > 0.45 and gtvp[-1] > 0.75  # the primary tumour is found, and refined, as GTVp
