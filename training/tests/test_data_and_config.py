"""Folds, the preprocessed cache and configuration overrides."""
from __future__ import annotations

import numpy as np
import pytest
from interactive_refine_training.cli import build_parser, train_config
from interactive_refine_training.config import preprocessing_settings
from interactive_refine_training.data import (
    CachedDataset,
    build_cache,
    cache_folder,
    fold_assignment,
    load_cases,
    split,
)
from training_helpers import TRAINING, phantom_data, tiny_config

PAPER = TRAINING / "configs" / "paper.json"
IDS = [f"CHUM-{i:03d}" for i in range(23)]


def test_folds_are_deterministic_balanced_and_independent_of_input_order():
    first = fold_assignment(IDS, 5, seed=3)
    assert first == fold_assignment(list(reversed(IDS)), 5, seed=3)
    assert first != fold_assignment(IDS, 5, seed=4)
    sizes = np.bincount(list(first.values()))
    assert sizes.max() - sizes.min() <= 1
    vals = [set(split(IDS, k, 5, 3)[1]) for k in range(5)]
    assert set().union(*vals) == set(IDS) and sum(map(len, vals)) == len(IDS)


def test_cases_of_one_patient_share_a_fold():
    ids = [f"P{p:02d}_{t}" for p in range(12) for t in ("preRT", "midRT")]
    folds = fold_assignment(ids, 4, seed=0, pattern=r"^(P\d+)_")
    for p in range(12):
        assert folds[f"P{p:02d}_preRT"] == folds[f"P{p:02d}_midRT"]


def test_a_fold_outside_the_range_is_refused():
    with pytest.raises(ValueError, match="fold 5"):
        split(IDS, 5, 5, 0)


def test_cache_holds_the_working_grid_centred_on_the_gtvp(tmp_path):
    config = tiny_config()
    settings = preprocessing_settings(config)
    cases = load_cases(phantom_data())[:2]
    paths = build_cache(cases, settings, tmp_path, workers=1)
    assert paths[0].parent == cache_folder(settings, tmp_path)
    item = CachedDataset(paths, 1)[0]
    assert item["image"].dtype == np.float16 and item["image"].shape == (2, 48, 48, 48)
    assert item["label"].shape == (1, 48, 48, 48) and item["label"].sum() > 0
    centroid = np.argwhere(item["label"][0] > 0).mean(axis=0)
    assert np.allclose(centroid, 23.5, atol=3)  # GTVp at the ROI centre (paper 4.1)
    assert -1.0 <= item["image"][0].min() and item["image"][0].max() <= 1.0  # CT window -> [-1, 1]
    mtime = paths[0].stat().st_mtime_ns
    assert build_cache(cases, settings, tmp_path)[0].stat().st_mtime_ns == mtime  # reused
    other = dict(settings, roi_size_vox=[32, 32, 32])
    assert cache_folder(other, tmp_path) != paths[0].parent  # new settings, new cache


def test_command_line_overrides_the_config_file():
    args = build_parser().parse_args([
        "train", "--stage", "refine", "--data", "d", "--out", "o", "--config", str(PAPER),
        "--channels", "4,8,16", "--strides", "1,2", "--res-units", "1", "--roi", "32", "--max-epochs", "7",
        "--iterations-per-epoch", "none", "--no-amp", "--set", "interaction.mask_dropout=0.4",
        "--deepedit-free-prob", "0.5",
    ])
    config = train_config(args)
    assert config["network"]["channels"] == [4, 8, 16] and config["network"]["num_res_units"] == 1
    assert config["data"]["roi_size_vox"] == [32, 32, 32]
    assert config["optimization"]["max_epochs"] == 7 and config["optimization"]["lr"] == 1e-4
    assert config["optimization"]["iterations_per_epoch"] is None
    assert config["runtime"]["amp"] is False
    assert config["interaction"]["mask_dropout"] == 0.4
    assert config["interaction"]["deepedit_free_prob"] == 0.5


def test_paper_config_is_the_paper_protocol():
    from interactive_refine_training.config import load_config

    config = load_config(PAPER)
    assert config["network"]["channels"] == [16, 32, 64, 128, 256]
    assert config["network"]["strides"] == [1, 2, 2, 2] and config["network"]["num_res_units"] == 2
    assert config["data"]["roi_size_vox"] == [144] * 3
    opt = config["optimization"]
    assert (opt["lr"], opt["weight_decay"], opt["max_epochs"], opt["patience"]) == (1e-4, 1e-5, 300, 50)
    inter = config["interaction"]
    clicks = (inter["min_clicks"], inter["max_clicks"], inter["mask_dropout"], inter["val_clicks"])
    assert clicks == (1, 15, 0.2, 10)


def test_a_manifest_joins_folders_and_leaves_held_out_cases_out(tmp_path, shared_data):
    """``manifest``: phantoms and real cases in one CSV the trainer reads; held-out ids absent;
    a held-out id found nowhere is refused and writes nothing."""
    from interactive_refine_training.cli import main
    from InteractiveRefineLib.cases import find_cases
    from training_helpers import phantom_data

    real = shared_data / "sts_ibsi"
    if not real.is_dir():
        pytest.skip(f"{real} is absent")
    out = tmp_path / "lists" / "train.csv"
    assert main(["-q", "manifest", "--out", str(out), "--data", str(phantom_data()), "--data", str(real),
                 "--exclude", "STS_048,STS_051"]) == 0
    cases = {c.case_id: c for c in find_cases(out)}
    assert len(cases) == len(find_cases(phantom_data())) + len(find_cases(real)) - 2
    assert "STS_048" not in cases and "STS_004" in cases and cases["STS_004"].ct.is_file()
    assert main(["-q", "manifest", "--out", str(tmp_path / "bad.csv"), "--data", str(real),
                 "--exclude", "STS_999"]) == 2
    assert not (tmp_path / "bad.csv").exists()
