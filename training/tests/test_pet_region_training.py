"""Training with the ``pet_region`` refine input: the cached PET channel maps back to SUV, the
trainer builds the engine's channel from it, and the exported package names the input so the
engine feeds it (phantoms -> initial -> refine with pet_region -> export -> simulate)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from interactive_refine_training.cli import main
from interactive_refine_training.config import training_stages
from interactive_refine_training.data import CachedDataset, build_cache, load_cases
from InteractiveRefineLib.cases import find_cases
from InteractiveRefineLib.cli import main as engine_main
from InteractiveRefineLib.dicom_series import read_pet
from InteractiveRefineLib.geometry import read_volume, working_grid
from InteractiveRefineLib.intensity import images_on_grid
from InteractiveRefineLib.model_package import load_model_package
from training_helpers import cache_dir, initial_run, phantom_data, tiny_config, train_cli, workdir

REGION = '{"fraction": 0.4, "radius_mm": 10.0}'


def test_the_cached_pet_channel_maps_back_to_suv():
    config = tiny_config(interaction={"pet_region": json.loads(REGION)})
    from interactive_refine_training.config import preprocessing_settings

    settings = preprocessing_settings(config)
    case = load_cases(phantom_data())[0]
    item = CachedDataset(build_cache([case], settings, cache_dir()))[0]
    offset, scale = item["pet_to_suv"]
    suv_back = item["image"][1].astype(np.float32) * scale + offset
    ct = read_volume(case.ct)
    from interactive_refine_training.data import roi_center_ras
    from InteractiveRefineLib.dicom_import import read_label

    centre = roi_center_ras(ct, read_label(case.label), settings["label_value"])
    grid = working_grid(ct.grid, centre, settings["roi_size_vox"], settings["spacing_mm"])
    _, suv = images_on_grid(ct, read_pet(case.pet), grid)
    assert suv.max() > 2.0  # the phantom has uptake to threshold
    np.testing.assert_allclose(suv_back, suv, atol=0.02 * float(suv.max()))
    stage = training_stages(config)["refine"]
    assert [s.name for s in stage.inputs][-1] == "pet_region" and stage.in_channels == 6


@pytest.fixture(scope="module")
def region_package():
    run = workdir() / "runs" / "refine_pet_region"
    train_cli("--stage", "refine", "--data", str(phantom_data()), "--out", str(run),
              "--initial", str(initial_run()), "--set", f"interaction.pet_region={REGION}")
    out = workdir() / "packages" / "pet_region"
    assert main(["-q", "export", "--initial", str(initial_run()), "--refine", str(run), "--out", str(out),
                 "--name", "tiny-pet-region"]) == 0
    return out


def test_the_exported_package_names_the_input_and_the_engine_feeds_it(region_package, tmp_path):
    package = load_model_package(region_package)
    refine = package.spec.stages["refine"]
    assert [s.name for s in refine.inputs][-1] == "pet_region"
    assert refine.inputs[-1].options["fraction"] == pytest.approx(0.4)
    assert refine.in_channels == 6
    case = find_cases(phantom_data())[0]
    out = tmp_path / "sim.json"
    assert engine_main(["simulate", "--ct", str(case.ct), "--pet", str(case.pet), "--label", str(case.label),
                        "--model", str(region_package), "--clicks", "2", "--seed", "0", "--device", "cpu",
                        "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["dice"]) == 3


def test_a_package_re_exports_with_its_pet_region_input(region_package, tmp_path):
    """``export --refine PACKAGE`` keeps a pet_region package's refine member as it is."""
    assert main(["-q", "export", "--initial", str(region_package), "--refine", str(region_package),
                 "--out", str(tmp_path / "again")]) == 0
    again = load_model_package(tmp_path / "again")
    assert [s.name for s in again.spec.stages["refine"].inputs][-1] == "pet_region"


def test_a_dropped_pet_gives_no_region():
    """``data.pet_dropout`` zeroes the PET channel: the region is empty (a z-scored channel of zeros
    would map back to the case's mean SUV everywhere, and a 'region' of the whole ROI)."""
    from types import SimpleNamespace

    import torch
    from interactive_refine_training.variants import Clicks, RefineTrainer

    config = tiny_config(interaction={"pet_region": json.loads(REGION)})
    trainer = SimpleNamespace(config=config, pet_to_suv=(3.0, 2.0))  # mean SUV 3 > min_suvmax
    image = torch.zeros(1, 2, 16, 16, 16)
    image[0, 1, 6:10, 6:10, 6:10] = 4.0  # SUV 11 where the channel is 4
    clicks = Clicks()
    clicks.positive.append((8, 8, 8))
    kept = RefineTrainer.pet_region(trainer, image, clicks, {"fraction": 0.4})
    assert kept[0, 0, 6:10, 6:10, 6:10].all() and kept.sum() < 16 ** 3
    image[0, 1] = 0.0  # the PET dropped
    again = Clicks()
    again.positive.append((8, 8, 8))
    dropped = RefineTrainer.pet_region(trainer, image, again, {"fraction": 0.4})
    assert not dropped.any()


def test_a_threshold_start_sequence_begins_at_the_innermost_voxel_with_its_region():
    """``interaction.threshold_start``: the sequence's first click is positive at the tumour's
    innermost voxel and its PET region is the previous probability; without uptake there, or
    with the share 0, the sequence starts from the initial model (and draws nothing)."""
    from types import SimpleNamespace

    import torch
    from interactive_refine_training.variants import Clicks, RefineTrainer

    config = tiny_config(interaction={"pet_region": json.loads(REGION), "threshold_start": 1.0})
    trainer = SimpleNamespace(config=config, pet_to_suv=(1.0, 2.0), rng=np.random.default_rng(0),
                              refine_stage=training_stages(config)["refine"])
    trainer.pet_region = lambda *args: RefineTrainer.pet_region(trainer, *args)
    image = torch.zeros(1, 2, 32, 32, 32)
    image[0, 1, 5:10, 5:10, 5:10] = 4.0  # SUV 9 in a 5-voxel cube, 1 elsewhere
    truth = np.zeros((32, 32, 32), dtype=bool)
    truth[5:10, 5:10, 5:10] = True
    clicks = Clicks()
    start = RefineTrainer.threshold_start(trainer, image, truth, clicks)
    assert clicks.positive == [(7, 7, 7)] and not clicks.negative
    assert start.shape == (1, 1, 32, 32, 32)
    np.testing.assert_array_equal(start[0, 0].numpy() > 0.5, truth)

    cold = np.zeros_like(truth)
    cold[26:29, 26:29, 26:29] = True  # a "tumour" without uptake: no region, no click
    clicks = Clicks()
    assert RefineTrainer.threshold_start(trainer, image, cold, clicks) is None and len(clicks) == 0

    trainer.config = tiny_config(interaction={"pet_region": json.loads(REGION)})  # share 0
    before = trainer.rng.bit_generator.state
    assert RefineTrainer.threshold_start(trainer, image, truth, Clicks()) is None
    assert trainer.rng.bit_generator.state == before  # older configs draw the same batches


def test_threshold_start_needs_the_pet_region_input():
    with pytest.raises(ValueError, match="threshold_start needs interaction.pet_region"):
        tiny_config(interaction={"threshold_start": 0.5})


def test_a_grown_start_sequence_begins_too_large_and_its_first_click_is_negative():
    """``interaction.grown_start``: the previous probability is the GTVp grown by 2-3 voxels, so
    the simulated user's first click is a negative one on the excess; with the share 0 nothing is
    drawn (older configs train on the same sequences)."""
    from types import SimpleNamespace

    import torch
    from interactive_refine_training.variants import RefineTrainer
    from InteractiveRefineLib.simulated_user import SimulatedUser

    config = tiny_config(interaction={"grown_start": 1.0, "grown_start_vox": [2, 3]})
    trainer = SimpleNamespace(config=config, rng=np.random.default_rng(0),
                              refine_stage=training_stages(config)["refine"])
    trainer.mask_start = lambda mask, image: RefineTrainer.mask_start(trainer, mask, image)
    truth = np.zeros((32, 32, 32), dtype=bool)
    truth[10:18, 10:18, 10:18] = True
    start = RefineTrainer.grown_start(trainer, truth, torch.zeros(1, 2, 32, 32, 32))
    grown = start[0, 0].numpy() > 0.5
    assert start.shape == (1, 1, 32, 32, 32)
    assert grown[truth].all() and 8 ** 3 * 1.5 < grown.sum() < 14 ** 3  # all the tumour, and a shell
    assert not grown[10:18, 10:18, 21:].any()  # at most 3 voxels beyond the last (17)
    click = SimulatedUser("2sicr", np.random.default_rng(0)).next_click(grown, truth)
    assert click is not None and not click.positive and not truth[click.index]

    trainer.config = tiny_config()  # share 0
    before = trainer.rng.bit_generator.state
    assert RefineTrainer.grown_start(trainer, truth, torch.zeros(1, 2, 32, 32, 32)) is None
    assert trainer.rng.bit_generator.state == before


def test_a_missed_start_erases_the_tumour_and_keeps_the_false_positives():
    """``interaction.missed_start``: the initial model's probability with the GTVp (grown by the
    margin) erased and everything else kept, so the first simulated click is a positive one in
    the tumour; with the share 0 nothing is drawn."""
    from types import SimpleNamespace

    import torch
    from interactive_refine_training.variants import RefineTrainer
    from InteractiveRefineLib.simulated_user import SimulatedUser

    truth = np.zeros((32, 32, 32), dtype=bool)
    truth[10:18, 10:18, 10:18] = True
    initial = torch.zeros(1, 1, 32, 32, 32)
    initial[0, 0, 9:19, 9:19, 9:19] = 0.9  # the tumour found, one voxel too large
    initial[0, 0, 24:30, 24:30, 24:30] = 0.8  # and a hot gland elsewhere
    config = tiny_config(interaction={"missed_start": 1.0, "missed_start_margin_vox": 2})
    trainer = SimpleNamespace(config=config, rng=np.random.default_rng(0),
                              starting_probability=lambda image: initial)
    start = RefineTrainer.missed_start(trainer, truth, torch.zeros(1, 2, 32, 32, 32))
    assert start.shape == (1, 1, 32, 32, 32)
    assert not start[0, 0, 8:20, 8:20, 8:20].any()  # the tumour and its margin erased
    assert torch.equal(start[0, 0, 24:30, 24:30, 24:30], initial[0, 0, 24:30, 24:30, 24:30])
    assert float(initial[0, 0, 12, 12, 12]) == pytest.approx(0.9)  # the model's output is not modified
    click = SimulatedUser("2sicr", np.random.default_rng(0)).next_click(start[0, 0].numpy() > 0.5, truth)
    assert click is not None and click.positive and truth[click.index]

    trainer.config = tiny_config()  # share 0
    before = trainer.rng.bit_generator.state
    assert RefineTrainer.missed_start(trainer, truth, torch.zeros(1, 2, 32, 32, 32)) is None
    assert trainer.rng.bit_generator.state == before


def test_a_hot_start_marks_the_tumour_and_the_separate_hot_regions():
    """``interaction.hot_start``: the GTVp plus every separate region of at least 40 % of the
    tumour's SUVmax (hot glands, brain), not the hot rim touching the tumour nor a speck; the first
    simulated click is a negative one on the largest hot region. No PET uptake: not drawn."""
    from types import SimpleNamespace

    import torch
    from interactive_refine_training.variants import RefineTrainer
    from InteractiveRefineLib.simulated_user import SimulatedUser

    truth = np.zeros((32, 32, 32), dtype=bool)
    truth[10:16, 10:16, 10:16] = True
    suv = np.ones((32, 32, 32), np.float32)
    suv[9:17, 9:17, 9:17] = 4.0  # the tumour's rim: hot, touching it
    suv[10:16, 10:16, 10:16] = 10.0
    suv[22:30, 20:30, 20:30] = 5.0  # a gland: 800 voxels at half the tumour's SUVmax
    suv[2:4, 28:30, 2:4] = 8.0  # a speck of 8 voxels
    suv[2:6, 2:6, 26:30] = 3.0  # 30 % of SUVmax: not hot
    offset, scale = 1.0, 2.0  # the channel maps back to SUV
    image = torch.stack([torch.zeros(32, 32, 32), torch.from_numpy((suv - offset) / scale)])[None]
    config = tiny_config(interaction={"hot_start": 1.0})
    trainer = SimpleNamespace(config=config, rng=np.random.default_rng(0), pet_to_suv=(offset, scale),
                              refine_stage=training_stages(config)["refine"])
    trainer.mask_start = lambda mask, image: RefineTrainer.mask_start(trainer, mask, image)
    start = RefineTrainer.hot_start(trainer, truth, image)[0, 0].numpy() > 0.5
    expected = truth.copy()
    expected[22:30, 20:30, 20:30] = True
    assert np.array_equal(start, expected)
    click = SimulatedUser("2sicr", np.random.default_rng(0)).next_click(start, truth)
    assert not click.positive and 22 <= click.index[0] < 30

    suv[22:30, 20:30, 20:30] = 1.0  # nothing hot apart from the tumour: not drawn
    image = torch.stack([torch.zeros(32, 32, 32), torch.from_numpy((suv - offset) / scale)])[None]
    assert RefineTrainer.hot_start(trainer, truth, image) is None


def test_a_refine_run_trains_from_hot_and_missed_starts_and_its_card_says_so(tmp_path):
    """The real trainer (cached phantoms, the frozen initial network, the PET mapped back to SUV)
    runs sequences from both starts, and the exported card records their shares."""
    run = tmp_path / "refine_hot_missed"
    train_cli("--stage", "refine", "--data", str(phantom_data()), "--out", str(run), "--initial",
              str(initial_run()), "--set", "interaction.hot_start=0.5",
              "--set", "interaction.missed_start=1.0", "--set", "optimization.max_epochs=1")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and np.isfinite(summary["best_metric"])
    assert main(["-q", "export", "--initial", str(initial_run()), "--refine", str(run),
                 "--out", str(tmp_path / "package")]) == 0
    refine = load_model_package(tmp_path / "package").card["training"]["refine"][0]
    interaction = refine["protocol"]["interaction"]
    assert (interaction["hot_start"], interaction["missed_start"]) == (0.5, 1.0)


@pytest.mark.parametrize("interaction, message", [
    ({"hot_start": 2}, "hot_start must lie"),
    ({"missed_start": -0.1}, "missed_start must lie"),
    ({"missed_start_margin_vox": 1.5}, "missed_start_margin_vox must be"),
    ({"missed_start_margin_vox": -1}, "missed_start_margin_vox must be"),
    ({"grown_start": 1.5}, "grown_start must lie"),
    ({"grown_start_vox": [3, 2]}, "grown_start_vox must be"),
    ({"grown_start_vox": [0, 2]}, "grown_start_vox must be"),
])
def test_grown_start_settings_are_checked(interaction, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(interaction=interaction)
