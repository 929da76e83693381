"""HN-UISeg's three-stage protocol: ``--stage prompt`` (stage 1) and the runs it starts.

The prompts drawn from the truth (one positive click per connected component and class, as many
negatives outside every class's truth, all channels zero when the prompt is off), the config's
check of ``prompt_prob``, and a tiny stage 1 -> stage 2 -> stage 3 -> export chain on phantoms.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from interactive_refine_training.config import load_config, training_stages
from scipy import ndimage
from training_helpers import TRAINING, cache_dir, phantom_data, tiny_config, workdir

MULTI_CONFIG = TRAINING / "configs" / "ci_tiny_multiclass.json"
THREE_STAGE_CONFIG = TRAINING / "configs" / "hnuiseg_three_stage.json"
TWO = {"classes": ["gtvp", "gtvn"]}
SHAPE = (48, 48, 48)


def _two_class_label() -> torch.Tensor:
    """``[1, 2, 48, 48, 48]``: GTVp two components (one L-shaped), GTVn three."""
    label = np.zeros((2,) + SHAPE, dtype=np.float32)
    label[0, 10:18, 10:18, 10:18] = 1
    label[0, 30:36, 8:12, 30:40] = 1
    label[0, 30:40, 8:12, 36:40] = 1  # joins the one before: still one component
    label[1, 25:29, 30:34, 5:9] = 1
    label[1, 40:44, 40:44, 40:44] = 1
    label[1, 5:7, 40:43, 20:22] = 1
    return torch.from_numpy(label[None])


def _prompt_trainer(tmp_path, **interaction):
    from interactive_refine_training.variants import PromptTrainer

    config = tiny_config(data=TWO, interaction=interaction)
    return PromptTrainer(config, tmp_path / "data", tmp_path / "run")


def _guidance(positive, negative, config):
    from InteractiveRefineLib.clicks import encode_guidance

    inter = config["interaction"]
    return encode_guidance(SHAPE, positive, negative, sigma=float(inter["sigma_vox"]),
                           truncate=float(inter["truncate"]))


def test_the_prompt_holds_one_positive_per_component_and_class_and_as_many_negatives_outside(tmp_path):
    trainer = _prompt_trainer(tmp_path)
    label = _two_class_label()
    truth = label[0].numpy() > 0.5
    image = torch.randn((1, 2) + SHAPE)
    slices = training_stages(trainer.config)["refine"].slices()
    seen = {True: 0, False: 0}
    for seed in range(12):
        trainer.rng = np.random.default_rng(seed)
        x, clicks = trainer.training_input(image, label)
        assert x.shape == (1, 7) + SHAPE
        assert torch.equal(x[:, :2], image)
        assert not x[:, slices["previous_probability"]].any()  # no previous mask, ever
        on = len(clicks) > 0
        seen[on] += 1
        positive, negative = x[0, slices["clicks_positive"]].numpy(), x[0, slices["clicks_negative"]].numpy()
        if not on:
            assert not positive.any() and not negative.any()
            continue
        for c, mask in enumerate(truth):
            components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
            assert count == (2, 3)[c]
            mine = [p for p, k in zip(clicks.positive, clicks.labels) if k == c]
            assert sorted(int(components[p]) for p in mine) == list(range(1, count + 1))  # one each
            np.testing.assert_array_equal(positive[c], _guidance(mine, [], trainer.config)[0])
        assert len(clicks.negative) == len(clicks.positive) == 5
        assert not any(truth[:, k, j, i].any() for k, j, i in clicks.negative)  # outside every class
        np.testing.assert_array_equal(negative[0], _guidance([], clicks.negative, trainer.config)[1])
    assert seen[True] >= 2 and seen[False] >= 2  # prompt_prob 0.5: both happen


def test_the_prompt_probability_and_the_innermost_placement(tmp_path):
    from interactive_refine_training.variants import prompt_clicks

    label = _two_class_label()
    for probability, expected in ((0.0, False), (1.0, True)):
        trainer = _prompt_trainer(tmp_path, prompt_prob=probability)
        trainer.rng = np.random.default_rng(0)
        assert all((len(trainer.training_input(torch.zeros((1, 2) + SHAPE), label)[1]) > 0) == expected
                   for _ in range(5))
    clicks = prompt_clicks(label, np.random.default_rng(0), "innermost")
    assert (13, 13, 13) in clicks.positive and (41, 41, 41) in clicks.positive  # cube centres (first tie)
    assert clicks.labels == [0, 0, 1, 1, 1]
    single = prompt_clicks(label[:, :1], np.random.default_rng(0))  # one class: its components only
    assert len(single.positive) == len(single.negative) == 2 and set(single.labels) == {0}


@pytest.mark.parametrize("value", [1.5, -0.1, "half", True, None])
def test_a_bad_prompt_probability_is_refused(value):
    with pytest.raises(ValueError, match=r"interaction\.prompt_prob must be a probability in \[0, 1\]"):
        load_config(None, {"interaction": {"prompt_prob": value}})


def test_a_bad_prompt_probability_is_refused_on_the_command_line(capsys):
    from interactive_refine_training.cli import main

    assert main(["train", "--stage", "prompt", "--data", "d", "--out", "o", "--prompt-prob", "2"]) == 2
    assert "interaction.prompt_prob must be a probability in [0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="prompt_click"):
        load_config(None, {"interaction": {"prompt_click": "centre"}})


def test_the_three_stage_config_is_the_papers_where_it_applies():
    config = load_config(THREE_STAGE_CONFIG)
    assert config["data"]["classes"] == ["gtvp", "gtvn"] and config["network"]["dropout"] == 0.05
    inter = config["interaction"]
    assert inter["prompt_prob"] == 0.5 and inter["simulated_user"] == "hnuiseg"
    opt = config["optimization"]
    assert (opt["optimizer"], opt["scheduler"], opt["max_epochs"]) == ("AdamW", "cosine", 300)
    assert opt["patience"] >= opt["max_epochs"]  # no early stopping


# ------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def three_stages():
    """Stage 1 (prompt), stage 2 (initial from stage 1), stage 3 (refine from stage 1 on stage 2):
    one epoch of two iterations each on the tiny phantoms."""
    from interactive_refine_training.cli import main

    base = ["-q", "train", "--config", str(MULTI_CONFIG), "--cache-dir", str(cache_dir()), "--data",
            str(phantom_data()), "--max-epochs", "1", "--set", "runtime.max_val_cases=1"]
    runs = workdir() / "runs"
    prompt, initial, refine = runs / "hn_prompt", runs / "hn_initial", runs / "hn_refine"
    assert main(base + ["--stage", "prompt", "--out", str(prompt)]) == 0
    assert main(base + ["--stage", "initial", "--out", str(initial), "--init-weights", str(prompt)]) == 0
    assert main(base + ["--stage", "refine", "--out", str(refine), "--initial", str(initial),
                        "--init-weights", str(prompt), "--set", "interaction.simulated_user=hnuiseg"]) == 0
    return prompt, initial, refine


def test_a_prompt_run_starts_the_refine_and_initial_stages(three_stages, tmp_path):
    from interactive_refine_training.checkpoint import load_run
    from interactive_refine_training.cli import main
    from InteractiveRefineLib.model_package import load_model_package

    prompt, initial, refine = three_stages
    run = load_run(prompt)
    assert run.trainer == "prompt" and run.config["interaction"]["prompt_prob"] == 0.5
    summary = json.loads((prompt / "summary.json").read_text())
    assert summary["simulated_user"] == "hnuiseg" and summary["metric"] == "val_dice_last"
    for folder in (initial, refine):
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["init_weights"] == str(prompt) and summary["epochs_run"] == 1
    # the refine network (stage 3) has exactly the prompt network's shapes
    shapes = {k: tuple(v.shape) for k, v in run.state_dict.items()}
    assert shapes == {k: tuple(v.shape) for k, v in load_run(refine).state_dict.items()}
    package = tmp_path / "pkg"
    assert main(["-q", "export", "--initial", str(initial), "--refine", str(refine), "--out", str(package),
                 "--name", "tiny-three-stage"]) == 0
    assert load_model_package(package).card["outputs"][1]["name"] == "gtvn"


def test_the_initial_network_from_a_prompt_run_is_the_prompt_network_without_prompts(three_stages):
    """Stage 2's start: the prompt network's image-channel weights compute exactly what the prompt
    network computes with the previous probability and every click channel zero."""
    from interactive_refine_training.checkpoint import load_run
    from interactive_refine_training.variants import prompt_free_state
    from InteractiveRefineLib.networks import build_network

    run = load_run(three_stages[0])
    config = run.config
    prompt_net = build_network(config["network"], 7, out_channels=2).eval()
    prompt_net.load_state_dict(run.state_dict)
    initial_net = build_network(config["network"], 2, out_channels=2).eval()
    initial_net.load_state_dict(prompt_free_state(run.state_dict, config))
    image = torch.randn((1, 2) + SHAPE)
    with torch.no_grad():
        without_prompts = prompt_net(torch.cat([image, torch.zeros((1, 5) + SHAPE)], 1))
        torch.testing.assert_close(initial_net(image), without_prompts)


def test_other_runs_still_cannot_start_a_stage(three_stages):
    from interactive_refine_training.checkpoint import load_stage_weights
    from interactive_refine_training.variants import InitialTrainer

    _, initial, refine = three_stages
    trainer = InitialTrainer(load_config(MULTI_CONFIG), "d", "o", init_weights=refine)
    with pytest.raises(ValueError, match="is a 'refine' run"):
        trainer.init_weights_state()
    with pytest.raises(ValueError, match="is a 'initial' run"):
        load_stage_weights(initial, "prompt", "refine", load_config(MULTI_CONFIG))
