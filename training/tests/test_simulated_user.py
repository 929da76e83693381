"""The simulated user that training, validation and evaluation share (the engine's), tested
against its definition: 2S-ICR paper section 4.2 and MONAI DeepGrow/DeepEdit."""
from __future__ import annotations

import numpy as np
import pytest
from InteractiveRefineLib.simulated_user import SimulatedUser
from scipy import ndimage


def _ball(shape, center, radius):
    k, j, i = np.indices(shape)
    return (k - center[0]) ** 2 + (j - center[1]) ** 2 + (i - center[2]) ** 2 <= radius**2


def _cube(shape, low, size):
    mask = np.zeros(shape, dtype=bool)
    mask[low[0]:low[0] + size, low[1]:low[1] + size, low[2]:low[2] + size] = True
    return mask


@pytest.fixture()
def shifted_ball():
    """A prediction shifted against the truth: false negatives on one side, false positives on the other."""
    shape = (32, 32, 32)
    return _ball(shape, (16, 16, 13), 7), _ball(shape, (16, 16, 18), 7)  # prediction, truth


@pytest.mark.parametrize("preset", ["2sicr", "deepgrow", "deepedit"])
def test_a_click_lies_in_an_error_and_its_sign_matches_the_error_type(shifted_ball, preset):
    prediction, truth = shifted_ball
    user = SimulatedUser(preset, np.random.default_rng(1))
    signs = set()
    for _ in range(200):
        click = user.next_click(prediction, truth)
        assert prediction[click.index] != truth[click.index], "a click must fall in an error region"
        assert click.positive == bool(truth[click.index] and not prediction[click.index])
        assert click.positive != bool(prediction[click.index] and not truth[click.index])
        signs.add(click.positive)
    if preset == "2sicr":  # both error types are one region: both signs occur
        assert signs == {True, False}


def test_no_error_no_click(shifted_ball):
    _, truth = shifted_ball
    assert SimulatedUser("2sicr", np.random.default_rng(0)).next_click(truth, truth) is None


@pytest.mark.parametrize("preset", ["2sicr", "deepgrow"])
def test_deeper_voxels_are_chosen_more_often(preset):
    shape = (24, 24, 24)
    truth = _cube(shape, (4, 4, 4), 15)
    prediction = np.zeros(shape, dtype=bool)  # the whole cube is missed
    depth = ndimage.distance_transform_edt(truth)
    user = SimulatedUser(preset, np.random.default_rng(0))
    chosen = [user.next_click(prediction, truth).index for _ in range(2000)]
    chosen_depth = np.mean([depth[c] for c in chosen])
    assert chosen_depth > depth[truth].mean() + 0.5
    centre = sum(depth[c] >= 5 for c in chosen)
    border = sum(depth[c] <= 1 for c in chosen)
    assert centre > border


def test_fixed_seeds_reproduce(shifted_ball):
    prediction, truth = shifted_ball

    def sequence(seed):
        user = SimulatedUser("2sicr", np.random.default_rng(seed))
        return [user.next_click(prediction, truth) for _ in range(20)]

    assert sequence(7) == sequence(7)
    assert sequence(7) != sequence(8)


def _fn_fp(shape, fn_size, fp_size):
    """(prediction, truth): a missed truth cube of fn_size^3 and a false-positive cube of fp_size^3."""
    return _cube(shape, (20, 20, 20), fp_size), _cube(shape, (2, 2, 2), fn_size)


@pytest.mark.parametrize("fn_size, fp_size, expect_positive", [(5, 4, True), (4, 5, False), (4, 4, True)])
def test_deepgrow_clicks_the_larger_error_type_and_fn_on_a_tie(fn_size, fp_size, expect_positive):
    shape = (32, 32, 32)
    prediction, truth = _fn_fp(shape, fn_size, fp_size)
    user = SimulatedUser("deepgrow", np.random.default_rng(0))
    assert {user.next_click(prediction, truth).positive for _ in range(30)} == {expect_positive}


def test_deepedit_ignores_false_positive_blobs_of_at_most_50_voxels():
    shape = (32, 32, 32)
    small_fp, truth = _fn_fp(shape, 2, 3)  # FN 8 voxels, FP 27 voxels (<= 50)
    deepedit = SimulatedUser("deepedit", np.random.default_rng(0))
    deepgrow = SimulatedUser("deepgrow", np.random.default_rng(0))
    assert all(deepedit.next_click(small_fp, truth).positive for _ in range(20))
    assert not any(deepgrow.next_click(small_fp, truth).positive for _ in range(20))
    large_fp, truth = _fn_fp(shape, 2, 4)  # FP 64 voxels (> 50): kept
    assert not any(deepedit.next_click(large_fp, truth).positive for _ in range(20))
