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
    assert load_model_package().path == DEFAULT_MODEL_DIR
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
    first, last = trained_on["seeds"]
    assert last - first + 1 == trained_on["n_cases"] == card["training"]["phantoms"]["n_cases"]
    held_out = trained_on["held_out_evaluation_seeds"]
    assert held_out[0] > last  # evaluation phantoms never met in training
    assert "recipe" in card["compute"] and "scripts/train_default_model.sh" in card["compute"]["recipe"]
    # The refinement network reads the one-click threshold regions; real training cases are
    # sarcoma only (CC BY), never a case the card reports as held out.
    assert [s.name for s in load_model_package().spec.stages["refine"].inputs][-1] == "pet_region"
    assert "CC BY 3.0" in {source["licence"] for source in card["data_sources"]}
    assert trained_on["real_cases"] and all(c.startswith("STS_") for c in trained_on["real_cases"])
    for name, cases in (("heldout_phantoms", 6), ("real_hn", 5), ("real_hn_auto", 5), ("heldout_sarcoma", 4)):
        metrics = card["metrics"][name]
        assert len(metrics["cases"]) == cases and metrics["seeds"] == 3
        assert len(metrics["dice_per_click"]) == len(metrics["hd95_mm_per_click"]) == 11
        assert "evaluate" in metrics["command"]
        assert not set(metrics["cases"]) & set(trained_on["real_cases"])


def test_simulate_on_the_real_case_reproduces_the_cards_curve(card, tmp_path):
    """`interactive-refine simulate` with the default model on CHGJ015 (seed 0, full-ROI refinement)
    gives the evaluation's seed-0 curve recorded in the card, and the clicks improve the mask."""
    from InteractiveRefineLib.geometry import read_volume
    from InteractiveRefineLib.simulation import label_centroid_ras

    folder = data_path(*CHGJ)
    out = tmp_path / "sim.json"
    # The evaluation's ROI centre: the GTVp centroid (the paper's protocol), at full precision.
    centre = label_centroid_ras(read_volume(folder / "CHGJ015_ct_gtvt.nii.gz"))
    roi = "--roi-center=" + ",".join(repr(float(v)) for v in centre)
    assert main(["simulate", "--ct", str(folder / "CHGJ015_ct.nii.gz"),
                 "--pet", str(folder / "CHGJ015_pt.nii.gz"),
                 "--label", str(folder / "CHGJ015_ct_gtvt.nii.gz"), "--clicks", "5", "--seed", "0",
                 "--device", "cpu", "--refine-mode", "full", roi,
                 "--json", str(out)]) == 0
    dice = json.loads(out.read_text())["dice"]
    recorded = card["metrics"]["real_hn"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"]
    # The same computation as the card's evaluation (identical here; tolerance for other CPUs).
    assert dice == pytest.approx(recorded[:6], abs=0.01)
    # What a user sees: the first mask also covers hot normal tissue (Dice ~0.42); the card makes
    # the first "tumour" click a threshold click, so the mask becomes its 40 % SUVmax region (Dice
    # 0.842 on this case, inside the ROI 0.841), and later clicks refine from there.
    assert card["threshold_start"] is True
    assert dice[0] < 0.5 and dice[5] > 1.5 * dice[0]
    assert max(dice[1:6]) >= 0.84
    assert np.all(np.isfinite(dice))


PET_REGION_MODEL = DEFAULT_MODEL_DIR.parent / "pet_region"


def _simulate_chgj015(model, tmp_path, *options) -> dict:
    """``simulate --clicks 3 --seed 0`` of ``model`` on CHGJ015 with the ROI on the GTVp: its JSON."""
    from InteractiveRefineLib.geometry import read_volume
    from InteractiveRefineLib.simulation import label_centroid_ras

    folder = data_path(*CHGJ)
    centre = label_centroid_ras(read_volume(folder / "CHGJ015_ct_gtvt.nii.gz"))
    out = tmp_path / "sim.json"
    assert main(["simulate", "--ct", str(folder / "CHGJ015_ct.nii.gz"),
                 "--pet", str(folder / "CHGJ015_pt.nii.gz"),
                 "--label", str(folder / "CHGJ015_ct_gtvt.nii.gz"), "--clicks", "3", "--seed", "0",
                 "--device", "cpu", "--refine-mode", "full", "--model", str(model), *options,
                 "--roi-center=" + ",".join(repr(float(v)) for v in centre), "--json", str(out)]) == 0
    return json.loads(out.read_text())


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
    dice = _simulate_chgj015(PET_REGION_MODEL, tmp_path)["dice"]
    recorded = card["metrics"]["real_hn"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"]
    assert dice == pytest.approx(recorded[:4], abs=0.01)


TUMOUR_ROI_MODEL = DEFAULT_MODEL_DIR.parent / "tumour_roi"


def test_the_tumour_roi_model_is_complete_and_beats_the_default_at_the_tumour_on_the_real_case(tmp_path):
    """The opt-in model for an ROI placed on the tumour: a complete card that says where it loses
    (the automatic ROI), real training cases disjoint from every case it reports, and on CHGJ015
    (ROI on the GTVp) `simulate` gives the seed-0 curve of its card, a first mask better than the
    default's, and no threshold start."""
    package = load_model_package(TUMOUR_ROI_MODEL)  # checksums verified
    card = package.card
    assert sum(f.stat().st_size for f in TUMOUR_ROI_MODEL.iterdir()) < 25 * 1024**2
    assert "not for clinical decisions" in card["intended_use"] and "automatic ROI" in card["intended_use"]
    assert card["license"] == "Apache-2.0" and not package.spec.threshold_start
    assert "CC BY 3.0" in {source["licence"] for source in card["data_sources"]}
    trained = set(card["trained_on"]["real_cases"])
    assert len(trained) == 18 and all(c.startswith("STS_") for c in trained)
    for name in ("heldout_phantoms", "real_hn", "real_hn_auto", "heldout_sarcoma"):
        assert not trained & set(card["metrics"][name]["cases"]), name
        assert card["metrics"][name]["seeds"] == 3 and len(card["metrics"][name]["dice_per_click"]) == 11
    # Where it is chosen for, and where not: its card's means on the five real H&N cases.
    tumour = card["metrics"]["real_hn"]["dice_per_click"]
    auto = card["metrics"]["real_hn_auto"]["dice_per_click"]
    default = load_model_package().card["metrics"]
    assert tumour[0] > default["real_hn"]["dice_per_click"][0] + 0.1
    assert auto[5] < default["real_hn_auto"]["dice_per_click"][5]
    result = _simulate_chgj015(TUMOUR_ROI_MODEL, tmp_path)
    recorded = card["metrics"]["real_hn"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"]
    assert result["dice"] == pytest.approx(recorded[:4], abs=0.01)
    default_first = default["real_hn"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"][0]
    assert result["dice"][0] > default_first + 0.2


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
    result = _simulate_chgj015(GTVP_GTVN_MODEL, tmp_path, "--user", "hnuiseg")
    recorded = card["metrics"]["real_hn"]["per_case"]["CHGJ015"]["dice_per_click_by_seed"]["0"]
    assert result["dice"] == pytest.approx(recorded[:4], abs=0.01)
    gtvp = result["dice_per_class"]["gtvp"]
    assert gtvp[0] > 0.45 and gtvp[-1] > 0.75  # the primary tumour is found, and refined, as GTVp
