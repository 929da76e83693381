"""The uncertainty map (test-time augmentation, MC dropout) and the suggested next click."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.uncertainty import UNCERTAIN_NATS, estimate, predictive_entropy, suggest


@pytest.fixture(scope="module")
def session(tiny_package):
    from InteractiveRefineLib.phantom import make_phantom

    ct, pet, _ = make_phantom()
    session = RefinementSession(tiny_package, device="cpu", refine_mode="full")
    session.set_image(ct, pet)
    session.initial()
    return session


def test_entropy_is_zero_where_every_pass_agrees_and_largest_at_one_half():
    mean = np.array([0.0, 1.0, 0.5, 0.1], dtype=np.float32)
    entropy = predictive_entropy(mean)
    assert entropy[0] == 0.0 and entropy[1] == 0.0
    assert entropy[2] == pytest.approx(np.log(2.0)) and 0 < entropy[3] < entropy[2]


def test_the_estimate_is_deterministic_for_a_seed_and_leaves_the_session_alone(session):
    before = session.mask_on_ct().copy(), session.step
    first, again = estimate(session, 4, seed=3), estimate(session, 4, seed=3)
    other = estimate(session, 4, seed=4)
    assert np.array_equal(first.entropy, again.entropy) and first.augmentations == again.augmentations
    assert first.augmentations != other.augmentations
    assert np.array_equal(session.mask_on_ct(), before[0]) and session.step == before[1]
    assert first.entropy.shape == session.grid.shape and first.entropy.max() <= np.log(2.0) + 1e-6
    assert np.allclose(first.entropy, predictive_entropy(first.mean))


def test_a_pass_without_perturbation_is_the_models_own_prediction(session, monkeypatch):
    import InteractiveRefineLib.uncertainty as module

    monkeypatch.setattr(module, "NOISE_SD", 0.0)
    monkeypatch.setattr(module, "_draw", lambda rng: ("noise", 0))
    assert np.array_equal(estimate(session, 2).mean, session.probability)


def test_flips_and_rotations_are_mapped_back_to_the_grid():
    import torch
    from InteractiveRefineLib.uncertainty import _augment, _restore

    k, j, i = torch.meshgrid(*[torch.linspace(-1, 1, 32)] * 3, indexing="ij")
    field = torch.exp(-((k - 0.2) ** 2 + j**2 + (i + 0.1) ** 2) * 4)  # smooth, zero at the faces
    for augmentation in (("flip", 0), ("flip", 2), ("rotate", 0, 4.0), ("rotate", 2, -5.0)):
        moved = _augment(field[None, None], augmentation, [])
        assert not torch.allclose(moved[0, 0], field, atol=1e-3)
        back = _restore(moved[0, 0], augmentation)
        assert torch.allclose(back, field, atol=0.02), augmentation


def test_the_suggestion_is_the_most_uncertain_region_not_clicked_yet(session):
    mean = np.zeros(session.grid.shape, np.float32)
    entropy = np.zeros_like(mean)
    entropy[5:10, 5:10, 5:10] = 0.6  # 125 voxels
    entropy[30:34, 30:34, 30:34] = 0.69  # 64 voxels: less entropy in total
    mean[30:34, 30:34, 30:34] = 0.9
    first = suggest(session, mean, entropy)
    assert first.index == (7, 7, 7) and not first.positive
    assert first.entropy_sum == pytest.approx(0.6 * 125)
    second = suggest(session, mean, entropy, clicked=[(6, 6, 6)])  # that region was clicked
    assert 30 <= min(second.index) and max(second.index) < 34 and second.positive
    assert suggest(session, mean, entropy * 0 + UNCERTAIN_NATS / 2) is None


def test_segment_writes_the_uncertainty_map_and_suggests_a_click(tiny_package_dir, tmp_path):
    from InteractiveRefineLib.geometry import read_volume, write_volume
    from InteractiveRefineLib.phantom import make_phantom

    ct, pet, _ = make_phantom()
    write_volume(ct, tmp_path / "ct.nii.gz")
    write_volume(pet, tmp_path / "pet.nii.gz")
    completed = subprocess.run(
        [sys.executable, "-m", "InteractiveRefineLib.cli", "segment", "--ct", str(tmp_path / "ct.nii.gz"),
         "--pet", str(tmp_path / "pet.nii.gz"), "--model", str(tiny_package_dir), "--device", "cpu",
         "--out", str(tmp_path / "mask.nii.gz"), "--uncertainty", str(tmp_path / "entropy.nii.gz"),
         "--suggest", "--uncertainty-passes", "3"],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])["uncertainty"]
    assert summary["passes"] == 3 and summary["file"].endswith("entropy.nii.gz")
    entropy = read_volume(tmp_path / "entropy.nii.gz")
    assert entropy.shape == ct.shape and np.allclose(entropy.ijk_to_ras, ct.ijk_to_ras)
    assert 0.0 <= float(entropy.array.min()) and float(entropy.array.max()) <= np.log(2.0) + 1e-4
    assert summary["max_entropy_nats"] >= float(entropy.array.max()) - 0.05
