"""The "suggest" simulated user: "click here next" as the user, signed by the truth."""
from __future__ import annotations

import json

import numpy as np
import pytest
from InteractiveRefineLib.errors import InteractiveRefineError
from InteractiveRefineLib.model_package import load_model_package
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.simulated_user import SimulatedUser, SuggestUser, make_user, step_seed
from InteractiveRefineLib.simulation import click_loop, run_simulation
from InteractiveRefineLib.uncertainty import estimate

PASSES = 2


def _session(package):
    from InteractiveRefineLib.phantom import make_phantom

    ct, pet, label = make_phantom()
    session = RefinementSession(package, device="cpu", refine_mode="full")
    session.set_image(ct, pet)
    session.initial()
    return session, label


@pytest.fixture(scope="module")
def one_class(tiny_package):
    return _session(tiny_package)


@pytest.fixture(scope="module")
def two_classes(two_class_package_dir):
    return _session(load_model_package(two_class_package_dir))


def _prediction(session) -> np.ndarray:
    return session.mask_on_working_grid().astype(bool)


def _the_suggestion(session, seed=0, step=1):
    """The suggestion the user sees at ``step`` of a run seeded with ``seed``."""
    suggestion = estimate(session, PASSES, seed=step_seed(seed, step)).suggestion
    assert suggestion is not None, "the tiny model should be uncertain somewhere"
    return suggestion


def test_the_user_clicks_exactly_at_the_suggested_point(one_class):
    session, _ = one_class
    suggestion = _the_suggestion(session)
    truth = np.ones(session.grid.shape, dtype=bool)  # an error wherever the model says background
    click = SuggestUser(session, seed=0, passes=PASSES).next_click(_prediction(session), truth)
    assert click.index == suggestion.index
    # and the loop places it at that point's RAS, like a markup
    user = SuggestUser(session, seed=0, passes=PASSES)
    step = next(click_loop(session, truth, 1, user, apply=lambda ras, positive: positive))
    np.testing.assert_allclose(step.ras, suggestion.ras)


def test_the_sign_comes_from_the_truth_at_the_suggested_point(one_class):
    session, _ = one_class
    index = _the_suggestion(session).index
    inside = np.zeros(session.grid.shape, dtype=bool)
    inside[tuple(slice(v - 2, v + 3) for v in index)] = True
    outside = np.zeros(session.grid.shape, dtype=bool)
    outside[:4, :4, :4] = True  # a tumour far from the suggestion
    prediction = _prediction(session)
    assert SuggestUser(session, 0, PASSES).next_click(prediction, inside | outside).positive
    assert not SuggestUser(session, 0, PASSES).next_click(prediction, outside).positive


def test_with_several_classes_a_positive_click_carries_the_true_class(two_classes):
    session, _ = two_classes
    index = _the_suggestion(session).index
    truth = np.zeros(session.grid.shape, dtype=np.uint8)
    truth[tuple(slice(v - 2, v + 3) for v in index)] = 2  # GTVn (class index 1) at the suggestion
    truth[:4, :4, :4] = 1
    prediction = session.mask_on_working_grid().astype(np.uint8)
    click = SuggestUser(session, 0, PASSES).next_click(prediction, truth)
    assert click.index == index and click.positive and click.label == 1
    truth[truth == 2] = 1  # GTVp there now
    assert SuggestUser(session, 0, PASSES).next_click(prediction, truth).label == 0


def test_no_suggestion_falls_back_to_the_2sicr_click_and_says_so(one_class, monkeypatch):
    import InteractiveRefineLib.uncertainty as module

    session, _ = one_class
    truth = np.zeros(session.grid.shape, dtype=bool)
    truth[20:28, 20:28, 20:28] = True
    prediction = _prediction(session)
    monkeypatch.setattr(module, "UNCERTAIN_NATS", 10.0)  # nothing is uncertain: no suggestion
    user = SuggestUser(session, seed=5, passes=PASSES)
    reference = SimulatedUser("2sicr", np.random.default_rng(5))
    for _ in (1, 2):
        assert user.next_click(prediction, truth) == reference.next_click(prediction, truth)
    assert user.summary()["fallback_clicks"] == 2 and user.summary()["fallback_steps"] == [1, 2]
    # a suggestion where the user cannot click (outside the CT) falls back too
    monkeypatch.undo()
    index = _the_suggestion(session).index
    can_click = np.ones(session.grid.shape, dtype=bool)
    can_click[index] = False
    blocked = SuggestUser(session, seed=5, passes=PASSES, inside=can_click)
    assert blocked.next_click(prediction, truth).index != index
    assert blocked.fallback_steps == [1]


def test_the_user_stops_when_no_error_is_left(one_class):
    session, _ = one_class
    prediction = _prediction(session)
    user = SuggestUser(session, 0, PASSES)
    assert user.next_click(prediction, prediction.copy()) is None
    assert user.seconds == []  # no estimate was spent on it


def test_a_run_is_deterministic_for_a_seed_and_records_the_suggest_user(tiny_package):
    def run(seed):
        session, label = _session(tiny_package)
        return run_simulation(session, label, 3, seed=seed, preset="suggest", surface_metrics=False,
                              baseline=False, uncertainty_passes=PASSES)

    first, again = run(0), run(0)
    assert first["clicks"] == again["clicks"] and first["dice"] == again["dice"]
    assert first["preset"] == "suggest" and len(first["dice"]) == 4
    record = first["suggest"]
    assert record["passes"] == PASSES and len(record["uncertainty_seconds"]) == len(first["clicks"])
    assert record["fallback_clicks"] == len(record["fallback_steps"]) <= len(first["clicks"])
    assert step_seed(0, 1) != step_seed(0, 2) != step_seed(1, 2)


def test_the_suggest_user_needs_the_session():
    with pytest.raises(InteractiveRefineError, match="needs the refinement session"):
        SimulatedUser("suggest")
    with pytest.raises(InteractiveRefineError, match="needs the refinement session"):
        make_user("suggest", 0)
    assert isinstance(make_user("deepgrow", 0), SimulatedUser)


def test_cli_simulate_with_the_suggest_user(tiny_package_dir, tmp_path, capsys):
    from InteractiveRefineLib.cli import main
    from InteractiveRefineLib.geometry import write_volume
    from InteractiveRefineLib.phantom import make_phantom

    ct, pet, label = make_phantom()
    for name, volume in (("ct", ct), ("pet", pet), ("label", label)):
        write_volume(volume, tmp_path / f"{name}.nii.gz")
    out = tmp_path / "sim.json"
    rc = main(["simulate", "--ct", str(tmp_path / "ct.nii.gz"), "--pet", str(tmp_path / "pet.nii.gz"),
               "--label", str(tmp_path / "label.nii.gz"), "--model", str(tiny_package_dir), "--device", "cpu",
               "--user", "suggest", "--uncertainty-passes", "3", "--clicks", "2", "--json", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = json.loads(out.read_text())
    assert result["preset"] == "suggest" and len(result["dice"]) == 3
    assert result["suggest"]["passes"] == 3
    assert len(result["suggest"]["uncertainty_seconds"]) == len(result["clicks"]) == 2
    assert summary["fallback_clicks"] == result["suggest"]["fallback_clicks"]


def test_the_training_cli_evaluates_with_the_suggest_user_but_does_not_train_with_it():
    from interactive_refine_training.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["evaluate", "--model", "m", "--data", "d", "--out", "o", "--user", "suggest",
                              "--uncertainty-passes", "4"])
    assert args.user == "suggest" and args.uncertainty_passes == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--stage", "refine", "--data", "d", "--out", "o", "--user", "suggest"])
