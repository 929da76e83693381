"""Multi-class training (HN-UISeg: GTVp label 1 and GTVn label 2, one sigmoid each).

Labels, loss, per-class metrics and DSCagg, the unchanged single-class setting (batch hashes),
and a tiny multi-class train -> export -> engine load -> evaluate on phantoms.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import json

import numpy as np
import pytest
import torch
from interactive_refine_training.config import (
    classes_of,
    label_values,
    load_config,
    n_classes,
    preprocessing_settings,
    settings_hash,
    training_stages,
)
from interactive_refine_training.data import CachedDataset, build_cache, load_cases
from interactive_refine_training.seg_metrics import class_metrics, dsc_agg
from training_helpers import TRAINING, cache_dir, initial_run, phantom_data, tiny_config, workdir

MULTI_CONFIG = TRAINING / "configs" / "ci_tiny_multiclass.json"
TWO = {"classes": ["gtvp", "gtvn"]}


def _digest(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _engine_is_multiclass() -> bool:
    """The engine takes cards with several outputs and per-class refine inputs."""
    from InteractiveRefineLib.card import default_inputs_section
    from InteractiveRefineLib.networks import build_network

    return ("n_classes" in inspect.signature(default_inputs_section).parameters
            and "out_channels" in inspect.signature(build_network).parameters)


needs_engine = pytest.mark.skipif(
    not _engine_is_multiclass(),
    reason="the engine's multi-class contract (default_inputs_section(n_classes), "
           "build_network(out_channels)) is not in this tree")


# ------------------------------------------------------------------------------ configuration
def test_the_default_is_the_single_class_setting_and_classes_are_checked():
    single = tiny_config()
    assert single["data"]["classes"] == ["gtvp"] and classes_of(single) == [("gtvp", 1)]
    assert label_values(single) == 1 and n_classes(single) == 1
    assert classes_of(tiny_config(data={"label_value": 2})) == [("gtvp", 2)]  # --label still works
    multi = tiny_config(data=TWO)
    assert classes_of(multi) == [("gtvp", 1), ("gtvn", 2)] and label_values(multi) == (1, 2)
    custom = tiny_config(data={"classes": ["gtvp", {"name": "node", "label": 5}]})
    assert label_values(custom) == (1, 5)
    for bad in (["gtvx"], [], ["gtvp", "gtvp"], ["gtvp", {"name": "x", "label": 1}],
                [{"name": "x", "label": 0}, "gtvp"]):
        with pytest.raises(ValueError, match="data.classes"):
            tiny_config(data={"classes": bad})


def test_single_class_cache_settings_are_unchanged_and_multi_class_ones_are_new():
    single = preprocessing_settings(tiny_config())
    assert "roi_center_labels" not in single
    assert settings_hash(single) == "4190766c69500d7c"  # the hash before data.classes existed
    multi = preprocessing_settings(tiny_config(data=TWO))
    assert multi["roi_center_labels"] == [1, 2] and settings_hash(multi) != settings_hash(single)


@needs_engine
def test_refine_inputs_have_one_channel_per_class():
    stages = training_stages(tiny_config(data=TWO))
    refine = [(spec.name, spec.channels) for spec in stages["refine"].inputs]
    assert refine == [("ct", 1), ("pet", 1), ("previous_probability", 2), ("clicks_positive", 2),
                      ("clicks_negative", 1)]
    assert stages["initial"].in_channels == 2 and stages["refine"].in_channels == 7
    single = training_stages(tiny_config())["refine"]
    assert [spec.channels for spec in single.inputs] == [1] * 5


# ----------------------------------------------------------------------------------- labels
def test_multi_class_labels_of_a_phantom_have_one_channel_per_class(tmp_path):
    from InteractiveRefineLib.geometry import read_volume

    config = tiny_config(data=TWO)
    cases = load_cases(phantom_data())
    paths = build_cache(cases, preprocessing_settings(config), tmp_path)
    with_nodes = 0
    for case, path in zip(cases, paths):
        item = CachedDataset([path], label_values(config))[0]
        stored = np.load(path)["label"]
        assert item["label"].dtype == np.float32 and item["label"].shape == (2, 48, 48, 48)
        assert np.array_equal(item["label"][0], stored == 1) and np.array_equal(item["label"][1], stored == 2)
        assert item["label"][0].sum() > 0
        assert not (item["label"][0] * item["label"][1]).any()  # the classes do not overlap
        with_nodes += int(item["label"][1].any())
        source = np.rint(read_volume(case.label).array)
        if not (source == 2).any():
            assert not item["label"][1].any()
    assert with_nodes >= 1  # the generator writes nodes as label 2


def test_the_augmentation_keeps_multi_class_labels_binary_and_aligned():
    from interactive_refine_training.augment import augment, build_augmentation

    config = tiny_config(data=TWO)
    paths = build_cache(load_cases(phantom_data()), preprocessing_settings(config), cache_dir())
    transform = build_augmentation(config, ["ct", "pet"], [48, 48, 48], torch.device("cpu"))
    items = [CachedDataset(paths, (1, 2))[i] for i in range(len(paths))]
    item = next(item for item in items if item["label"][1].any())  # a phantom with nodes
    image = torch.from_numpy(item["image"].astype(np.float32))
    transform.set_random_state(seed=3)
    _, label = augment(transform, image, torch.from_numpy(item["label"]))
    assert label.shape == (2, 48, 48, 48) and set(torch.unique(label).tolist()) <= {0.0, 1.0}
    assert not (label[0] * label[1]).any()
    # the same transform on the single-class label moves GTVp exactly like channel 0
    transform.set_random_state(seed=3)
    _, gtvp = augment(transform, image, torch.from_numpy(item["label"][:1]))
    assert torch.equal(gtvp[0], label[0])


def test_single_class_batches_are_bit_identical_to_before():
    """The default configuration's training samples: the same bytes as before data.classes
    (hashes recorded with the unchanged training package and phantom generator 1.2, whose seed-0
    phantom generator 1.3 keeps bit for bit), with and without the augmentation."""
    from interactive_refine_training.augment import augment, build_augmentation

    config = tiny_config()
    paths = build_cache(load_cases(phantom_data())[:2], preprocessing_settings(config), cache_dir())
    plain = CachedDataset(paths, config["data"]["label_value"])[(0, 12345)]
    assert _digest(plain["image"], plain["label"]) == "8a279e305585dd94"
    transform = build_augmentation(config, ["ct", "pet"], [48, 48, 48], torch.device("cpu"))
    augmented = CachedDataset(paths, config["data"]["label_value"], transform=transform)[(0, 12345)]
    assert _digest(augmented["image"], augmented["label"]) == "1f6cbb970e5cbe23"
    # ... which is the pre-change recipe: label == label_value as one float32 channel
    with np.load(paths[0]) as stored:
        old_label = (stored["label"] == 1).astype(np.float32)[None]
        old_image = stored["image"]
    transform.set_random_state(seed=12345)
    image_t, label_t = augment(transform, torch.from_numpy(old_image.astype(np.float32)),
                               torch.from_numpy(old_label))
    assert np.array_equal(image_t.numpy(), augmented["image"])
    assert np.array_equal(label_t.numpy(), augmented["label"])


# ------------------------------------------------------------------------------------- loss
def test_the_loss_runs_on_two_classes_and_is_unchanged_for_one():
    from interactive_refine_training.trainer import SigmoidDiceBCELoss, Trainer
    from monai.losses import DiceCELoss, DiceLoss

    torch.manual_seed(0)
    logits = torch.randn(1, 2, 16, 16, 16, requires_grad=True)
    target = (torch.rand(1, 2, 16, 16, 16) > 0.8).float()
    target[:, 1] *= 1 - target[:, 0]
    loss_fn = Trainer(tiny_config(data=TWO), "unused", workdir() / "unused").build_loss()
    assert isinstance(loss_fn, SigmoidDiceBCELoss)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    p = torch.sigmoid(logits.detach())
    dice = np.mean([1 - (2 * (p[:, c] * target[:, c]).sum() + 1e-5)
                    / (p[:, c].sum() + target[:, c].sum() + 1e-5) for c in range(2)])
    bce = torch.nn.functional.binary_cross_entropy(p, target)
    assert float(loss.detach()) == pytest.approx(float(dice + bce), rel=1e-5)
    assert float(loss) == pytest.approx(float(DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)(
        logits, target) + bce), rel=1e-5)
    # MONAI's DiceCELoss turns into a softmax CE on several channels: not the loss of two sigmoids
    assert float(DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)) != pytest.approx(
        float(loss), rel=1e-3)
    # one class: the single-class configuration keeps DiceCELoss, and the two agree on one channel
    single = Trainer(tiny_config(), "unused", workdir() / "unused").build_loss()
    assert isinstance(single, DiceCELoss)
    one, one_target = logits.detach()[:, :1], target[:, :1]
    expected = float(SigmoidDiceBCELoss()(one, one_target))
    assert float(single(one, one_target)) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------- metrics
def test_per_class_metrics_and_dsc_agg_on_known_arrays():
    truth = np.zeros((10, 20, 20), np.uint8)
    truth[2:6, 2:8, 2:8] = 1  # GTVp: 144 voxels
    truth[2:4, 12:16, 12:16] = 2  # GTVn: 32 voxels
    prediction = np.zeros_like(truth)
    prediction[2:6, 2:8, 2:5] = 1  # half the GTVp
    prediction[2:4, 12:16, 12:16] = 2  # the GTVn exactly
    prediction[8, 0, 0] = 2  # one false-positive node voxel
    spacing = (1.0, 1.0, 2.0)
    p_metrics, p_sums = class_metrics(prediction == 1, truth == 1, spacing)
    assert p_metrics["dice"] == pytest.approx(2 * 72 / (72 + 144))
    assert p_sums == (144.0, 216.0)
    n_metrics, n_sums = class_metrics(prediction == 2, truth == 2, spacing)
    assert n_metrics["dice"] == pytest.approx(64 / 65) and n_sums == (64.0, 65.0)
    assert n_metrics["hd95_mm"] == 0.0  # the 95th percentile ignores the one stray voxel
    assert p_metrics["hd95_mm"] == pytest.approx(3.0, abs=0.5)  # the missing half: 3 voxels of 1 mm
    # a case without nodes: Dice 0 with a false positive, null with nothing predicted; DSCagg
    # pools the voxels over cases, so the false positive counts there
    empty_truth = np.zeros_like(truth)
    fp_metrics, fp_sums = class_metrics(prediction == 2, empty_truth == 2, spacing, surface=False)
    assert fp_metrics["dice"] == 0.0 and fp_sums == (0.0, 33.0)
    none_metrics, none_sums = class_metrics(empty_truth == 2, empty_truth == 2, spacing, surface=False)
    assert none_metrics["dice"] is None and none_sums == (0.0, 0.0)
    assert dsc_agg([n_sums, fp_sums, none_sums]) == pytest.approx(64 / 98)
    assert dsc_agg([none_sums]) is None


def test_reports_give_per_class_tables_and_dsc_agg():
    from interactive_refine_training import reporting

    rows = []
    # two cases, two seeds, 0..1 clicks: GTVp sums (2|P∩T|, |P|+|T|) in mL
    sums = {("a", 0): (8.0, 10.0), ("a", 1): (9.0, 10.0), ("b", 0): (0.0, 4.0), ("b", 1): (2.0, 4.0)}
    for case in ("a", "b"):
        for seed in (0, 1):
            for t in (0, 1):
                inter, total = sums[(case, t)]
                rows.append({"model": "M", "case_id": case, "seed": seed, "clicks": t, "dice": 0.5,
                             "hd95_mm": 1.0, "assd_mm": 1.0, "surface_dice_1mm": 0.5, "changed_voxels": 0,
                             "seconds": None, "dice_gtvp": inter / total, "hd95_mm_gtvp": 2.0 - t,
                             "overlap2_ml_gtvp": inter, "volume_sum_ml_gtvp": total,
                             "dice_gtvn": None, "hd95_mm_gtvn": None,
                             "overlap2_ml_gtvn": 0.0, "volume_sum_ml_gtvn": 0.0})
    classes = {"M": [{"name": "gtvp", "label": 1}, {"name": "gtvn", "label": 2}]}
    summary = reporting.class_summary(rows, 1, classes)
    assert summary["M"]["gtvp"]["dsc_agg"]["0"] == pytest.approx(8 / 14, abs=1e-4)
    assert summary["M"]["gtvp"]["dsc_agg"]["1"] == pytest.approx(11 / 14, abs=1e-4)
    assert summary["M"]["gtvp"]["dice"]["0"] == pytest.approx((0.8 + 0.0) / 2, abs=1e-4)
    assert summary["M"]["gtvp"]["hd95_mm"]["1"] == pytest.approx(1.0)
    assert summary["M"]["gtvn"]["dsc_agg"]["0"] is None and "dice" not in summary["M"]["gtvn"]
    text = reporting.class_markdown(rows, 1, classes)
    assert "### DSCagg per class" in text and "| M | gtvp | 0.571 | 0.786 | 0.786 |" in text
    assert reporting.class_markdown(rows, 1, {}) == "" and reporting.class_summary(rows, 1, {}) == {}
    assert reporting.class_fields(rows)[:2] == ["dice_gtvp", "hd95_mm_gtvp"]
    single = [{k: v for k, v in row.items() if not k.endswith(("_gtvp", "_gtvn"))} for row in rows]
    assert reporting.class_fields(single) == []


def test_a_multi_class_refine_run_refuses_a_single_class_initial_run():
    from interactive_refine_training.checkpoint import load_initial_networks

    with pytest.raises(ValueError, match="classes"):
        load_initial_networks(initial_run(), tiny_config(data=TWO), torch.device("cpu"))


@needs_engine
def test_a_single_class_network_starts_every_class_of_a_multi_class_run():
    """``--init-weights`` from a single-class run or package (e.g. the shipped GTVp model): each
    class's output starts as a copy of the one output (up to the rounding of the wider convolutions,
    which the CPU may compute with other kernels)."""
    from interactive_refine_training.checkpoint import load_run, load_stage_weights
    from InteractiveRefineLib.networks import build_network

    config = tiny_config(data=TWO)
    state = load_stage_weights(initial_run(), "initial", "initial", config)
    multi = build_network(config["network"], 2, out_channels=2).eval()
    multi.load_state_dict(state)
    run = load_run(initial_run())
    single = build_network(run.config["network"], 2).eval()
    single.load_state_dict(run.state_dict)
    x = torch.randn(1, 2, 48, 48, 48)
    with torch.no_grad():
        one, two = single(x), multi(x)
    assert two.shape == (1, 2, 48, 48, 48)
    torch.testing.assert_close(two[:, :1], one, rtol=0, atol=1e-5)
    torch.testing.assert_close(two[:, 1:], one, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def multi_runs():
    from interactive_refine_training.cli import main

    base = ["-q", "train", "--config", str(MULTI_CONFIG), "--cache-dir", str(cache_dir()), "--data",
            str(phantom_data())]
    initial = workdir() / "runs" / "multi_initial"
    assert main(base + ["--stage", "initial", "--out", str(initial)]) == 0
    refine = workdir() / "runs" / "multi_refine"
    assert main(base + ["--stage", "refine", "--out", str(refine), "--initial", str(initial)]) == 0
    return initial, refine


@needs_engine
def test_a_multi_class_initial_run_has_one_output_per_class(multi_runs):
    from interactive_refine_training.checkpoint import load_initial_networks, load_run

    initial, _ = multi_runs
    summary = json.loads((initial / "summary.json").read_text())
    assert summary["classes"] == ["gtvp", "gtvn"] and summary["epochs_run"] == 2
    assert 0.0 <= summary["best_metric"] <= 1.0
    run = load_run(initial)
    assert run.config["data"]["classes"] == ["gtvp", "gtvn"] and run.config["network"]["dropout"] == 0.05
    (network,) = load_initial_networks(initial, load_config(MULTI_CONFIG), torch.device("cpu"))
    with torch.no_grad():
        assert network(torch.zeros(1, 2, 48, 48, 48)).shape == (1, 2, 48, 48, 48)


@needs_engine
def test_multi_class_runs_export_a_package_the_engine_loads_and_evaluate_scores_per_class(multi_runs,
                                                                                            tmp_path):
    from interactive_refine_training.cli import main
    from InteractiveRefineLib.model_package import load_model_package

    initial, refine = multi_runs
    package = tmp_path / "pkg"
    assert main(["-q", "export", "--initial", str(initial), "--refine", str(refine), "--out", str(package),
                 "--name", "tiny-hnuiseg"]) == 0
    loaded = load_model_package(package)
    card = loaded.card
    assert card["outputs"] == [{"name": "gtvp", "label": 1}, {"name": "gtvn", "label": 2}]
    assert card["activation"] == "sigmoid" and loaded.spec.classes == ("gtvp", "gtvn")
    refine_inputs = {entry["name"]: entry.get("channels", 1) for entry in card["inputs"]["refine"]}
    assert refine_inputs == {"ct": 1, "pet": 1, "previous_probability": 2, "clicks_positive": 2,
                             "clicks_negative": 1}
    assert card["training"]["classes"] == card["outputs"]
    assert card["clicks"]["simulated_user"] == "hnuiseg"
    with torch.no_grad():
        assert loaded.networks["initial"][0](torch.zeros(1, 2, 48, 48, 48)).shape[1] == 2
        assert loaded.networks["refine"][0](torch.zeros(1, 7, 48, 48, 48)).shape[1] == 2

    out = tmp_path / "eval"
    from InteractiveRefineLib.geometry import read_volume

    has_nodes = {case.case_id: bool((np.rint(read_volume(case.label).array) == 2).any())
                 for case in load_cases(phantom_data())}
    with_nodes = next(c for c, yes in has_nodes.items() if yes)
    without = next(c for c, yes in has_nodes.items() if not yes)  # its GTVn Dice is undefined
    cases = f"{with_nodes},{without}"
    assert main(["-q", "evaluate", "--model", f"MC={package}", "--data", str(phantom_data()),
                 "--cases", cases, "--clicks", "2", "--seeds", "1", "--device", "cpu", "--uncertainty", "2",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["user"] == "hnuiseg"
    assert set(summary["per_class"]["MC"]) == {"gtvp", "gtvn"}
    for name in ("gtvp", "gtvn"):
        agg = summary["per_class"]["MC"][name]["dsc_agg"]
        assert set(agg) == {"0", "1", "2", "avg"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in agg.values())
    rows = list(csv.DictReader(open(out / "per_case.csv")))
    assert len(rows) == 2 * 3
    assert {"dice_gtvp", "hd95_mm_gtvp", "dice_gtvn", "overlap2_ml_gtvn",
            "volume_sum_ml_gtvn"} <= set(rows[0])
    # the uncertainty's calibration per class (each class's mean probability against its label)
    at_zero = [r for r in rows if r["clicks"] == "0"]
    assert all(r["ece_gtvp"] != "" and r["ece_gtvn"] != "" and r["ece"] != "" for r in at_zero)
    no_nodes = [r for r in rows if r["case_id"] == without]
    # no GTVn in the truth: Dice null when nothing is predicted as a node, else 0
    assert all(r["dice_gtvn"] in ("", "0.0") for r in no_nodes)
    # DSCagg of the case table is the pooled sums of the rows
    at0 = [r for r in rows if r["clicks"] == "0"]
    pooled = sum(float(r["overlap2_ml_gtvp"]) for r in at0) / sum(float(r["volume_sum_ml_gtvp"]) for r in at0)
    assert summary["per_class"]["MC"]["gtvp"]["dsc_agg"]["0"] == pytest.approx(pooled, abs=1e-4)
    table = (out / "table.md").read_text()
    assert "### DSCagg per class" in table and "| MC | gtvn |" in table

    # select_model.py decides on one class's column (GTVp-only labels: --metric SET=dice_gtvp)
    import shutil
    import subprocess
    import sys

    for tree in ("base", "cand"):
        shutil.copytree(out, tmp_path / tree / "real")

    def select(column, set_name="real"):
        return subprocess.run([sys.executable, str(TRAINING / "scripts" / "select_model.py"),
                               "--select", "real", "--at", "1,2", "--baseline", str(tmp_path / "base"),
                               "--candidate", f"same={tmp_path / 'cand'}",
                               "--metric", f"{set_name}={column}"],
                              capture_output=True, text=True)

    gtvp = [sum(float(r["dice_gtvp"]) for r in rows if r["clicks"] == str(t)) / 2 for t in range(3)]
    done = select("dice_gtvp")
    assert done.returncode == 1 and "| same | real (dice_gtvp) | selection |" in done.stdout, done.stderr
    assert f"{gtvp[2]:.3f} ({gtvp[2]:.3f})" in done.stdout and "same: FAIL (real: 0 clicks" in done.stdout
    unknown = select("dice_gtvx")
    assert unknown.returncode == 2 and "has no column 'dice_gtvx'" in unknown.stderr
    typo = select("dice_gtvp", "reel")  # a set name that is not there: refused, not scored by dice
    assert typo.returncode == 2 and "does not have: reel" in typo.stderr


def test_a_single_class_refine_package_starts_a_multi_class_refine_run(tmp_path):
    """``--init-weights`` from the shipped kind of refine member (one class, ``pet_region``) for a
    GTVp + GTVn run without it: each class's click and previous-probability channel starts as a copy
    of the one, the dropped input is gone, so with no GTVn input every class computes the source's
    output with that input zero."""
    from interactive_refine_training.checkpoint import load_stage_weights
    from InteractiveRefineLib.model_package import create_random_model_package, load_model_package
    from InteractiveRefineLib.networks import build_network

    config = tiny_config(data={**TWO, "roi_size_vox": [48, 48, 48]})
    folder = create_random_model_package(tmp_path / "single", network=config["network"],
                                         roi_size_vox=(48, 48, 48), refine_extra=[{"name": "pet_region"}])
    source = load_model_package(folder).networks["refine"][0].eval()
    multi = build_network(config["network"], 7, out_channels=2).eval()  # ct pet prev*2 clicks+*2 clicks-
    multi.load_state_dict(load_stage_weights(folder, "refine", "refine", config))
    ct, pet, previous, positive, negative = torch.randn(5, 1, 1, 48, 48, 48)
    zero = torch.zeros_like(ct)
    with torch.no_grad():
        one = source(torch.cat([ct, pet, previous, positive, negative, zero], 1))
        two = multi(torch.cat([ct, pet, previous, zero, positive, zero, negative], 1))
    torch.testing.assert_close(two[:, :1], one)
    torch.testing.assert_close(two[:, 1:], one)


@needs_engine
def test_a_two_class_initial_run_serves_a_one_class_package_and_a_refine_run_from_it(multi_runs, tmp_path,
                                                                                    capsys):
    """``export --initial TWO_CLASS_RUN,ONE_CLASS_RUN --refine ONE_CLASS_RUN``: a GTVp card whose
    initial ensemble holds the two-class network (member ``outputs``: the card takes its GTVp
    channel, its dropout kept in its own network section); a one-class refine run then starts from
    that package's initial masks."""
    from interactive_refine_training.checkpoint import load_run
    from interactive_refine_training.cli import main
    from InteractiveRefineLib.model_package import load_model_package
    from InteractiveRefineLib.networks import build_network
    from training_helpers import train_cli

    two_class, _ = multi_runs
    refine = tmp_path / "refine"
    train_cli("--stage", "refine", "--data", str(phantom_data()), "--out", str(refine),
              "--initial", str(initial_run()), "--max-epochs", "1")
    package = tmp_path / "pkg"
    assert main(["-q", "export", "--initial", f"{two_class},{initial_run()}", "--refine", str(refine),
                 "--out", str(package)]) == 0
    loaded = load_model_package(package)
    members = loaded.card["members"]["initial"]
    assert loaded.spec.classes == ("gtvp",)
    assert members[0]["outputs"] == ["gtvp", "gtvn"] and members[0]["network"]["dropout"] == 0.05
    assert "outputs" not in members[1] and "network" not in members[1]
    run = load_run(two_class)
    network = build_network(run.config["network"], 2, out_channels=2).eval()
    network.load_state_dict(run.state_dict)
    x = torch.randn(1, 2, 48, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded.networks["initial"][0](x), network(x)[:, :1])
    # a one-class refine run from the package's initial ensemble; refine_init 'initial' cannot copy
    # a two-class network into it and says so
    base = ["-q", "train", "--config", str(TRAINING / "configs" / "ci_tiny.json"), "--cache-dir",
            str(cache_dir()), "--data", str(phantom_data()), "--stage", "refine", "--initial", str(package),
            "--max-epochs", "1"]
    assert main(base + ["--out", str(tmp_path / "again"), "--init-weights", str(package)]) == 0
    assert (tmp_path / "again" / "summary.json").is_file()
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "copied"), "--set", "interaction.refine_init=initial"]) == 2
    assert "copies the first initial member, a network of more classes" in capsys.readouterr().err
