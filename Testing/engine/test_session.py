"""Session semantics and bad input on real PET/CT (tiny random network, 48^3 ROI)."""
from __future__ import annotations

import numpy as np
import pytest
from InteractiveRefineLib.errors import ClickError, ImageError, SessionStateError
from InteractiveRefineLib.geometry import Volume, read_volume
from InteractiveRefineLib.session import RefinementSession

from conftest import data_path

STS = ("sts_petct", "hecktor_layout", "STS_001")


@pytest.fixture(scope="module")
def sts():
    ct = read_volume(data_path(*STS, "STS_001__CT.nii.gz"))
    pet = read_volume(data_path(*STS, "STS_001__PT.nii.gz"))
    return ct, pet


@pytest.fixture()
def session(tiny_package, sts):
    s = RefinementSession(tiny_package, device="cpu")
    s.set_image(*sts)
    s.initial()
    return s


def _inside(session, offset):
    return session.grid.center_ras() + np.asarray(offset, float)


def test_result_is_on_the_ct_grid(session, sts):
    assert session.mask_on_ct().shape == sts[0].shape
    assert session.mask_on_ct().dtype == np.uint8


def test_undo_restores_previous_mask_bit_for_bit(session):
    session.add_click(_inside(session, (3, 0, 0)), True)
    before = session.mask_on_ct().copy()
    probability = session.probability.copy()
    session.add_click(_inside(session, (-8, 4, 2)), False)
    session.undo()
    assert np.array_equal(session.mask_on_ct(), before)
    assert np.array_equal(session.probability, probability)
    assert len(session.clicks) == 1


def test_reset_returns_the_initial_mask(session):
    initial = session.mask_on_ct().copy()
    session.add_click(_inside(session, (3, 0, 0)), True)
    session.add_click(_inside(session, (0, 5, 0)), False)
    session.reset()
    assert np.array_equal(session.mask_on_ct(), initial)
    assert session.clicks == ()


def test_same_clicks_give_same_mask(tiny_package, sts):
    masks = []
    for _ in range(2):
        s = RefinementSession(tiny_package, device="cpu")
        s.set_image(*sts)
        s.initial()
        s.add_click(_inside(s, (3, 0, 0)), True)
        s.add_click(_inside(s, (-6, 2, 1)), False)
        masks.append(s.mask_on_ct())
    assert np.array_equal(masks[0], masks[1])


def test_a_click_changes_the_refined_probability_around_it(session):
    before = session.probability.copy()
    session.add_click(_inside(session, (4, 4, 4)), True)
    assert not np.array_equal(session.probability, before)
    assert session.timings[-1]["model_s"] > 0


def test_click_outside_the_image_changes_nothing(session):
    before, clicks = session.mask_on_ct().copy(), session.clicks
    with pytest.raises(ClickError, match="outside the CT image"):
        session.add_click(session.ct.grid.center_ras() + np.array([0, 0, 900.0]), True)
    assert np.array_equal(session.mask_on_ct(), before) and session.clicks == clicks


def test_click_outside_the_roi_changes_nothing(session):
    before = session.mask_on_ct().copy()
    outside_roi = session.grid.center_ras() + np.array([40.0, 0, 0])  # ROI is 48 mm wide
    with pytest.raises(ClickError, match="outside the region of interest"):
        session.add_click(outside_roi, False)
    assert np.array_equal(session.mask_on_ct(), before) and session.clicks == ()


def test_undo_without_clicks_is_refused(session):
    with pytest.raises(ClickError, match="no click to undo"):
        session.undo()


def test_click_before_initial_is_refused(tiny_package, sts):
    s = RefinementSession(tiny_package, device="cpu")
    s.set_image(*sts)
    with pytest.raises(SessionStateError, match="initial segmentation"):
        s.add_click(s.grid.center_ras(), True)


def test_pet_not_overlapping_the_ct_is_refused_and_keeps_the_old_image(session, sts):
    ct, pet = sts
    moved = pet.ijk_to_ras.copy()
    moved[:3, 3] += [0, 0, 2000.0]
    before = session.mask_on_ct().copy()
    with pytest.raises(ImageError, match="PET does not overlap"):
        session.set_image(ct, Volume.from_array(pet.array, moved))
    assert np.array_equal(session.mask_on_ct(), before)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((8, 8, 8), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 8), np.float32), "empty"),
        (np.zeros((0, 8, 8), np.float32), "empty"),
    ],
)
def test_empty_or_nan_ct_is_refused(tiny_package, sts, array, message):
    s = RefinementSession(tiny_package, device="cpu")
    with pytest.raises(ImageError, match=message):
        s.set_image(Volume(array, sts[0].grid.__class__(array.shape, np.eye(4))), sts[1])


def test_missing_pet_for_a_pet_model_is_refused(tiny_package, sts):
    with pytest.raises(ImageError, match="needs a PET"):
        RefinementSession(tiny_package, device="cpu").set_image(sts[0], None)


def test_cuda_request_without_cuda_falls_back_with_a_warning(tiny_package):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.warns(UserWarning, match="not available"):
        s = RefinementSession(tiny_package, device="cuda")
    assert s.device.type == "cpu"


def test_larger_roi_uses_sliding_window(tiny_package, sts):
    s = RefinementSession(tiny_package, device="cpu")
    s.set_image(*sts, roi_size_vox=(64, 96, 96))
    result = s.initial()
    assert s.grid.shape == (64, 96, 96) and result.step == 0
    assert s.mask_on_ct().shape == sts[0].shape
