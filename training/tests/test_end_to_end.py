"""Phantoms -> initial -> refine -> evaluate -> export -> the engine loads and simulates the package.

Also the baselines: a DeepEdit run exports as an engine package whose initial member is exactly
the trained model at zero clicks and whose refine member ignores the previous mask.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch
from interactive_refine_training.checkpoint import load_run
from interactive_refine_training.cli import main
from InteractiveRefineLib.cases import find_cases
from InteractiveRefineLib.cli import main as engine_main
from InteractiveRefineLib.model_package import load_model_package
from InteractiveRefineLib.networks import build_network
from training_helpers import (
    TINY_CONFIG,
    cache_dir,
    initial_run,
    phantom_data,
    tiny_config,
    train_cli,
    workdir,
)


@pytest.fixture(scope="module")
def refine_run():
    out = workdir() / "runs" / "refine"
    train_cli("--stage", "refine", "--data", str(phantom_data()), "--out", str(out),
              "--initial", str(initial_run()))
    return out


@pytest.fixture(scope="module")
def package(refine_run):
    out = workdir() / "packages" / "icr"
    assert main(["-q", "export", "--initial", str(initial_run()), "--refine", str(refine_run),
                 "--out", str(out), "--name", "tiny-2sicr", "--half"]) == 0
    return out


def test_training_writes_checkpoints_logs_and_summary(refine_run):
    summary = json.loads((refine_run / "summary.json").read_text())
    assert summary["trainer"] == "refine" and summary["epochs_run"] == 2
    assert summary["metric"] == "val_dice_last" and 0.0 <= summary["best_metric"] <= 1.0
    assert summary["simulated_user"] == "2sicr"
    for name in ("checkpoint_best.pt", "checkpoint_latest.pt", "config.json", "splits.json", "training.log"):
        assert (refine_run / name).is_file(), name
    history = json.loads((refine_run / "history.json").read_text())
    assert {"val_dice_0", "val_dice_2", "val_dice_last", "val_dice_mean"} <= set(history[-1])


def test_exported_package_loads_in_the_engine_and_runs_simulate(package, tmp_path):
    loaded = load_model_package(package)
    card = loaded.card
    assert card["name"] == "tiny-2sicr" and card["weights_dtype"] == "float16"
    assert card["preprocessing"]["roi_size_vox"] == [48, 48, 48]
    assert card["training"]["method"] == "2sicr"
    assert card["training"]["refine"][0]["protocol"]["interaction"]["mask_dropout"] == 0.2
    assert card["metrics"]["validation"]["refine"][0]["metric"] == "val_dice_last"
    assert all(m["sha256"] for m in card["members"]["refine"])
    case = find_cases(phantom_data())[0]
    out = tmp_path / "sim.json"
    assert engine_main(["simulate", "--ct", str(case.ct), "--pet", str(case.pet), "--label", str(case.label),
                        "--model", str(package), "--clicks", "2", "--seed", "0", "--device", "cpu",
                        "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["dice"]) == 3 and len(result["clicks"]) <= 2


def test_evaluate_writes_the_papers_tables_plot_and_tests(package, tmp_path):
    cases = [c.case_id for c in find_cases(phantom_data())[:2]]
    assert main(["-q", "evaluate", "--model", f"A={package}", "--model", f"B={package},{package}",
                 "--data", str(phantom_data()), "--cases", ",".join(cases), "--clicks", "2", "--seeds", "1",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "per_case.csv")))
    assert len(rows) == 2 * 2 * 3  # models x cases x (0..2 clicks)
    a = {(r["case_id"], r["clicks"]): float(r["dice"]) for r in rows if r["model"] == "A"}
    b = {(r["case_id"], r["clicks"]): float(r["dice"]) for r in rows if r["model"] == "B"}
    assert a == pytest.approx(b, abs=1e-6)  # a 2-member ensemble of one package is that package
    table = (tmp_path / "table.md").read_text()
    assert "| Model | 0 Clicks | 1 Click | 2 Clicks | 1 to 2 Avg. |" in table
    # The one-click PET threshold floor beside the model, per case (phantoms have hot lesions).
    assert "PET threshold floor" in table and "40 % SUVmax region" in table
    floor = [float(r["threshold40_dice"]) for r in rows if r["model"] == "A" and r["clicks"] == "0"]
    assert len(floor) == 2 and all(0.0 < d <= 1.0 for d in floor)
    assert (tmp_path / "dice_vs_clicks.png").stat().st_size > 1000
    assert (tmp_path / "wilcoxon.csv").is_file() and (tmp_path / "table.csv").is_file()


def test_deepedit_baseline_exports_as_an_exact_engine_package(tmp_path):
    run_dir = workdir() / "runs" / "deepedit"
    train_cli("--stage", "deepedit", "--data", str(phantom_data()), "--out", str(run_dir),
              "--deepedit-free-prob", "0.5")
    assert main(["-q", "export", "--refine", str(run_dir), "--out", str(tmp_path / "pkg")]) == 0
    package = load_model_package(tmp_path / "pkg")
    assert package.card["training"]["method"] == "deepedit"
    assert package.card["clicks"]["simulated_user"] == "deepedit"
    run = load_run(run_dir)
    trained = build_network(run.config["network"], 5)
    trained.load_state_dict(run.state_dict)
    trained.eval()
    image, extra = torch.randn(1, 2, 48, 48, 48), torch.rand(1, 3, 48, 48, 48)
    zero_previous = extra.clone()
    zero_previous[:, 0] = 0
    with torch.no_grad():
        at_zero_clicks = trained(torch.cat([image, torch.zeros_like(extra)], 1))
        assert torch.allclose(package.networks["initial"][0](image), at_zero_clicks, atol=1e-5)
        with_clicks = trained(torch.cat([image, zero_previous], 1))
        refined = package.networks["refine"][0](torch.cat([image, extra], 1))
        assert torch.allclose(refined, with_clicks, atol=1e-5)


def test_refine_network_started_from_the_initial_network_computes_it_exactly():
    """``interaction.refine_init = "initial"``: new input weights zero, so t = 0 output is unchanged."""
    from interactive_refine_training.variants import widened_state

    config = tiny_config()
    torch.manual_seed(0)
    initial = build_network(config["network"], 2).eval()
    refine = build_network(config["network"], 5).eval()
    refine.load_state_dict(widened_state(initial, config))
    image = torch.randn(1, 2, 48, 48, 48)
    with torch.no_grad():
        expected = initial(image)
        refined = refine(torch.cat([image, torch.rand(1, 3, 48, 48, 48)], 1))
        assert torch.allclose(refined, expected, atol=1e-5)


def test_card_results_records_the_evaluation_in_the_card(package, tmp_path):
    """``training/scripts/card_results.py``: the card's curves are the evaluation's, per case and seed,
    and the package still loads (the card is outside the weight checksums)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    cases = [c.case_id for c in find_cases(phantom_data())[:2]]
    assert main(["-q", "evaluate", "--model", f"A={package}", "--data", str(phantom_data()),
                 "--cases", ",".join(cases), "--clicks", "2", "--seeds", "2", "--device", "cpu",
                 "--out", str(tmp_path / "eval")]) == 0
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    script = Path(__file__).resolve().parents[1] / "scripts" / "card_results.py"
    done = subprocess.run([sys.executable, str(script), str(copy), f"phantoms={tmp_path / 'eval'}",
                           "--command", "evaluate ..."], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "eval" / "per_case.csv")))
    dice = {(r["case_id"], r["seed"], int(r["clicks"])): float(r["dice"]) for r in rows}
    recorded = load_model_package(copy).card["metrics"]["phantoms"]
    assert recorded["cases"] == sorted(cases) and recorded["seeds"] == 2
    assert recorded["command"] == "evaluate ..."
    for case in cases:
        by_seed = recorded["per_case"][case]["dice_per_click_by_seed"]
        assert sorted(by_seed) == ["0", "1"]
        for seed, curve in by_seed.items():
            assert curve == pytest.approx([dice[(case, seed, t)] for t in range(3)], abs=1e-4)
    for t in range(3):
        expected = sum(dice[(c, s, t)] for c in cases for s in ("0", "1")) / 4
        assert recorded["dice_per_click"][t] == pytest.approx(expected, abs=1e-4)


def test_fine_tuning_starts_from_a_packages_weights(package, tmp_path, capsys):
    """``--init-weights PACKAGE`` starts the refine network from the package's refine member (with
    learning rate 0 the run's weights are exactly the package's), and the summary says so; a
    source of another stage is refused with a clear message."""
    out = tmp_path / "finetune"
    train_cli("--stage", "refine", "--data", str(phantom_data()), "--out", str(out),
              "--initial", str(package), "--init-weights", str(package), "--lr", "0", "--max-epochs", "1")
    run = load_run(out)
    expected = load_model_package(package).networks["refine"][0].state_dict()
    for name, value in expected.items():
        assert torch.equal(run.state_dict[name].float(), value.float()), name
    assert json.loads((out / "summary.json").read_text())["init_weights"] == str(package)
    code = main(["-q", "train", "--config", str(TINY_CONFIG), "--cache-dir", str(cache_dir()),
                 "--stage", "refine", "--data", str(phantom_data()), "--out", str(tmp_path / "bad"),
                 "--initial", str(package), "--init-weights", str(initial_run())])
    assert code == 2
    assert "is a 'initial' run; this is a 'refine' run" in capsys.readouterr().err


def test_fine_tuning_may_change_the_geometry_but_not_the_intensities(package, tmp_path, caplog, capsys):
    """Fine-tuning a 48^3 package at 40^3 and 1.5 mm (the networks are fully convolutional) is a
    choice the log warns about, and the weights still load exactly; a package made for another
    intensity preset is refused before anything is written."""
    out = tmp_path / "regrid"
    with caplog.at_level("WARNING", logger="interactive_refine_training.checkpoint"):
        train_cli("--stage", "initial", "--data", str(phantom_data()), "--out", str(out), "--roi", "40",
                  "--set", "data.spacing_mm=[1.5,1.5,1.5]", "--init-weights", str(package),
                  "--lr", "0", "--max-epochs", "1")
    warnings = [r.getMessage() for r in caplog.records if "fine-tuning across geometry" in r.getMessage()]
    assert any("roi_size_vox [48, 48, 48], this run [40, 40, 40]" in w for w in warnings), warnings
    assert any("spacing_mm" in w for w in warnings), warnings
    run = load_run(out)
    expected = load_model_package(package).networks["initial"][0].state_dict()
    for name, value in expected.items():
        assert torch.equal(run.state_dict[name].float(), value.float()), name
    bad = tmp_path / "bad_preset"
    code = main(["-q", "train", "--config", str(TINY_CONFIG), "--cache-dir", str(cache_dir()),
                 "--stage", "initial", "--data", str(phantom_data()), "--out", str(bad),
                 "--set", "data.intensity_preset=clinical", "--init-weights", str(package)])
    assert code == 2
    assert "data.intensity_preset is '2sicr' but this run uses 'clinical'" in capsys.readouterr().err
    assert not (bad / "checkpoint_latest.pt").exists()


def test_export_keeps_a_packages_initial_model_and_replaces_its_refine_model(package, refine_run, tmp_path):
    """``export --initial PACKAGE --refine RUN``: the initial member and its card record are the
    package's, bit for bit; the refine member is the run's."""
    out = tmp_path / "replaced"
    assert main(["-q", "export", "--initial", str(package), "--refine", str(refine_run),
                 "--out", str(out), "--half", "--fast-window", "40"]) == 0
    old, new = load_model_package(package), load_model_package(out)
    assert new.fast_window_vox == 40 and old.fast_window_vox is None  # the card's fast_path.window_vox
    for name, value in old.networks["initial"][0].state_dict().items():
        assert torch.equal(new.networks["initial"][0].state_dict()[name], value), name
    assert new.card["training"]["initial"] == old.card["training"]["initial"]
    assert new.card["training"]["refine"][0]["run"] == str(refine_run)


def test_export_adds_an_unanchored_stage_from_a_packages_refine_members(package, refine_run, tmp_path):
    """``export --unanchored PACKAGE``: that package's refine member serves the card's unanchored
    stage (negative clicks before any positive one at an automatic ROI), bit for bit, with its
    training record; a package re-exported without the option has no such stage."""
    out = tmp_path / "with_unanchored"
    assert main(["-q", "export", "--initial", str(package), "--refine", str(refine_run),
                 "--unanchored", str(package), "--out", str(out)]) == 0
    old, new = load_model_package(package), load_model_package(out)
    assert new.spec.member_stages == ("initial", "refine", "unanchored")
    for name, value in old.networks["refine"][0].state_dict().items():
        assert torch.equal(new.networks["unanchored"][0].state_dict()[name], value), name
    assert new.card["training"]["unanchored"] == old.card["training"]["refine"]
    assert [m["value"] for m in new.card["metrics"]["validation"]["unanchored"]] == [
        m["value"] for m in old.card["metrics"]["validation"]["refine"]]
    again = tmp_path / "again"
    assert main(["-q", "export", "--initial", str(out), "--refine", str(out), "--out", str(again)]) == 0
    assert load_model_package(again).spec.member_stages == ("initial", "refine")


def test_select_model_applies_the_selection_rule_to_evaluations(package, tmp_path):
    """``training/scripts/select_model.py``: a candidate passes only if, on every selection set, its
    mean Dice at 0 clicks is above the baseline's and after the given clicks not below it; sets
    outside the selection are printed as "reported only" and never decide; a model never passes
    against itself; a baseline without a selection set is refused (exit 2)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    cases = ",".join(c.case_id for c in find_cases(phantom_data())[:2])

    def evaluate(out, *options):
        assert main(["-q", "evaluate", "--model", f"A={package}", "--data", str(phantom_data()),
                     "--cases", cases, "--clicks", "2", "--seeds", "1", "--device", "cpu",
                     "--no-surface", "--out", str(out), *options]) == 0

    evaluate(tmp_path / "base" / "phantoms", "--no-region-removal")
    evaluate(tmp_path / "cand" / "phantoms")
    for tree in ("base", "cand"):  # a set outside the selection: shown, never deciding
        shutil.copytree(tmp_path / tree / "phantoms", tmp_path / tree / "heldout")
    script = Path(__file__).resolve().parents[1] / "scripts" / "select_model.py"

    def select(*args):
        return subprocess.run([sys.executable, str(script), "--select", "phantoms", "--at", "1,2", *args],
                              capture_output=True, text=True)

    def mean_dice(folder):
        rows = list(csv.DictReader(open(folder / "per_case.csv")))
        return [sum(float(r["dice"]) for r in rows if int(r["clicks"]) == t) / len(cases.split(","))
                for t in range(3)]

    base, cand = mean_dice(tmp_path / "base" / "phantoms"), mean_dice(tmp_path / "cand" / "phantoms")
    expected = cand[0] > base[0] and cand[1] >= base[1] and cand[2] >= base[2]
    done = select("--baseline", str(tmp_path / "base"), "--candidate", f"new={tmp_path / 'cand'}")
    assert done.returncode == (0 if expected else 1), done.stdout + done.stderr
    assert ("new: PASS" in done.stdout) == expected
    assert "| new | heldout | reported only |" in done.stdout
    assert f"{cand[2]:.3f} ({base[2]:.3f})" in done.stdout

    def worst(curve):
        return min(b - a for a, b in zip(curve, curve[1:]))

    assert f"| {worst(cand):+.3f} ({worst(base):+.3f}) |" in done.stdout
    # --max-drop 0: no click may lower the mean Dice more than the baseline's worst click does
    steady = expected and worst(cand) >= min(0.0, worst(base)) - 1e-9
    strict = select("--baseline", str(tmp_path / "base"), "--candidate", f"new={tmp_path / 'cand'}",
                    "--max-drop", "0")
    assert strict.returncode == (0 if steady else 1) and ("new: PASS" in strict.stdout) == steady
    if expected and not steady:  # failed by this rule alone: the message says which click
        assert "one click lowers Dice by" in strict.stdout

    same = select("--baseline", str(tmp_path / "base"), "--candidate", f"same={tmp_path / 'base'}")
    assert same.returncode == 1 and "same: FAIL (phantoms: 0 clicks" in same.stdout
    assert "passed: none; keep the baseline" in same.stdout

    missing = select("--baseline", str(tmp_path / "cand" / "phantoms"),
                     "--candidate", f"new={tmp_path / 'cand'}")
    assert missing.returncode == 2 and "has no evaluation of phantoms" in missing.stderr
    # By default the rule also needs CHGJ015 + STS_001 and CHGJ015 at the automatic ROI.
    default = subprocess.run([sys.executable, str(script), "--baseline", str(tmp_path / "base"),
                              "--candidate", f"new={tmp_path / 'cand'}"], capture_output=True, text=True)
    assert default.returncode == 2 and "has no evaluation of real, real_auto" in default.stderr

    evaluate(tmp_path / "both" / "phantoms", "--model", f"B={package}")  # two models in one folder
    mixed = select("--baseline", str(tmp_path / "base"), "--candidate", f"both={tmp_path / 'both'}")
    assert mixed.returncode == 2 and "holds 2 models (A, B)" in mixed.stderr


def test_select_model_max_drop_fails_a_candidate_whose_click_erases_the_mask():
    """``--max-drop``: a candidate better at 0, 5 and 10 clicks still fails when one click lowers its
    mean Dice by more than the limit and more than the baseline's worst click does."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "select_model.py"
    spec = importlib.util.spec_from_file_location("select_model", path)
    select_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(select_model)
    baseline = [0.45, 0.48, 0.55, 0.60, 0.62, 0.66, 0.66, 0.67, 0.67, 0.68, 0.68]  # worst step 0.0
    erased = [0.62, 0.33, 0.58, 0.67, 0.64, 0.70, 0.70, 0.71, 0.73, 0.73, 0.74]  # first click: -0.29
    assert select_model.verdict(baseline, erased, (5, 10)) == []  # the rule without it passes
    assert select_model.verdict(baseline, erased, (5, 10), 0.01) == [
        "one click lowers Dice by 0.290 (allowed 0.010)"]
    shaky = [0.45, 0.40, 0.55, 0.60, 0.62, 0.66, 0.66, 0.67, 0.67, 0.68, 0.68]  # the baseline's own -0.05
    assert select_model.verdict(shaky, [v + 0.01 for v in shaky], (5, 10), 0.01) == []
    # --same-initial: a new refinement network behind the same first mask may tie at 0 clicks, not lose
    refined = [baseline[0]] + [v + 0.02 for v in baseline[1:]]
    assert select_model.verdict(baseline, refined, (5, 10)) == ["0 clicks 0.450 not above 0.450"]
    assert select_model.verdict(baseline, refined, (5, 10), same_initial=True) == []
    assert select_model.verdict(baseline, [0.44] + refined[1:], (5, 10), same_initial=True) == [
        "0 clicks 0.440 below 0.450"]
