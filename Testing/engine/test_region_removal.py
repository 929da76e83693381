"""Region removal: a negative click on a separate false-positive region removes all of it, once a
positive click shows where the tumour is; a click on the tumour's own region never erases it.

The rule's pure functions on small masks, then the shipped default model on the real
head-and-neck case CHGJ015 with the ROI where the automatic box goes, given as the user's ROI (so
the refine members answer every click): the initial mask there also covers hot tissue far from the
tumour, more of it than the tumour."""
from __future__ import annotations

import numpy as np
import pytest
from InteractiveRefineLib import click_regions
from InteractiveRefineLib.geometry import read_volume
from InteractiveRefineLib.model_package import load_model_package
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.simulation import truth_on_grid
from scipy import ndimage
from session_checks import assert_ct_mask_is_the_back_mapping, assert_tracked_statistics_exact

from conftest import data_path

CHGJ = ("hecktor2020_chgj015",)


def _two_blobs():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[2:6, 2:6, 2:6] = True  # "tumour"
    mask[12:18, 12:18, 12:18] = True  # "hot gland"
    return mask


def test_a_negative_click_rejects_the_region_it_lands_on():
    mask = _two_blobs()
    region = click_regions.rejected_region(mask, (14, 14, 14))
    assert region.sum() == 6**3 and region[12:18, 12:18, 12:18].all()
    assert click_regions.rejected_region(mask, (10, 10, 10)) is None  # on background


def test_a_rejected_region_goes_only_when_a_positive_click_is_elsewhere():
    mask = _two_blobs()
    gland = click_regions.rejected_region(mask, (14, 14, 14))
    assert click_regions.suppressed([gland], mask, []) is None  # no positive click yet
    removed = click_regions.suppressed([gland], mask, [(3, 3, 3)])
    assert np.array_equal(removed, gland)
    # A positive click inside the rejected region revokes it ...
    assert click_regions.suppressed([gland], mask, [(3, 3, 3), (15, 15, 15)]) is None
    # ... and so does a tumour region (one holding a positive click) that touches it.
    grown = mask.copy()
    grown[4:12, 4:12, 4:12] = True  # the refined tumour now reaches the gland's border
    assert click_regions.suppressed([gland], grown, [(3, 3, 3)]) is None


def test_a_positive_click_just_outside_a_rejected_region_revokes_it():
    """A negative click on a leak attached to the tumour rejects the tumour's region too. The next
    "tumour" click lands on the background just outside that region (the tumour is larger than the
    mask showed) and the refined mask has not grown to it: the tumour's region must stay."""
    mask = _two_blobs()
    tumour = click_regions.rejected_region(mask, (3, 3, 3))  # the leak's click: the whole region
    reach = click_regions.CLICK_REACH_VOX
    beside = (5 + reach, 3, 3)  # background, ``reach`` voxels past the region's last row (5)
    assert not mask[beside]
    assert click_regions.suppressed([tumour], mask, [beside]) is None
    # One voxel farther the click is a tumour elsewhere, and the rejected region goes.
    farther = (5 + reach + 1, 3, 3)
    assert np.array_equal(click_regions.suppressed([tumour], mask, [farther]), tumour)


@pytest.fixture(scope="module")
def chgj015():
    folder = data_path(*CHGJ)
    ct = read_volume(folder / "CHGJ015_ct.nii.gz")
    pet = read_volume(folder / "CHGJ015_pt.nii.gz")
    label = read_volume(folder / "CHGJ015_ct_gtvt.nii.gz")
    return ct, pet, label


@pytest.fixture(scope="module")
def box_centre(chgj015):
    """RAS centre of the automatically placed ROI on CHGJ015."""
    session = RefinementSession(load_model_package(), device="cpu")
    session.set_image(chgj015[0], chgj015[1], roi_center_ras="auto")
    assert session.roi_placement.method == "below_brain"
    return session.roi_placement.center_ras


def _session(chgj015, centre, **kwargs):
    ct, pet, _ = chgj015
    # The network's own answer to every click (no threshold start), at the user's ROI.
    session = RefinementSession(load_model_package(), device="cpu", threshold_start=False, **kwargs)
    session.set_image(ct, pet, roi_center_ras=centre)
    assert session.roi_placement.given
    session.initial()
    return session


def _regions(session):
    """Connected regions of the working-grid mask (26-connectivity), largest first."""
    labels, count = ndimage.label(session.mask_on_working_grid(), structure=np.ones((3, 3, 3)))
    regions = [labels == n for n in range(1, count + 1)]
    return sorted(regions, key=lambda r: -int(r.sum()))


def _ras(session, kji):
    return session.grid.index_to_ras(np.array(kji[::-1], dtype=float))


def _deepest(region):
    """The voxel of ``region`` farthest from its border (where a user would click)."""
    distance = ndimage.distance_transform_edt(region)
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(distance)), region.shape))


@pytest.fixture(scope="module")
def brain_and_tumour(chgj015, box_centre):
    """The initial mask's largest false region (hot normal tissue, no tumour in it; larger than
    the tumour) and the tumour centre."""
    session = _session(chgj015, box_centre)
    truth = truth_on_grid(chgj015[2], session.grid)
    brain = next(region for region in _regions(session) if not (region & truth).any())
    assert brain.sum() > truth.sum()
    return brain, _deepest(brain), _deepest(truth)


def test_negative_then_positive_click_removes_the_whole_false_region(chgj015, box_centre, brain_and_tumour):
    brain, on_brain, on_tumour = brain_and_tumour
    session = _session(chgj015, box_centre)
    first = session.add_click(_ras(session, on_brain), positive=False)
    assert first.removed_ml == 0.0  # no positive click yet: the network alone answers
    after_negative = session.mask_on_ct().copy()
    left_by_network = int(session.mask_on_working_grid()[brain].sum())
    assert left_by_network > 0  # the network carved around the point but left part of the region
    second = session.add_click(_ras(session, on_tumour), positive=True)
    mask = session.mask_on_working_grid().astype(bool)
    assert not mask[brain].any()  # the whole region is gone ...
    assert second.removed_ml > 0  # ... and the status line can say how much
    assert "kept_rejected" not in second.details  # the tumour point is far from the rejected region
    truth = truth_on_grid(chgj015[2], session.grid)
    assert (mask & truth).sum() > 0.5 * truth.sum()  # the tumour stays
    assert_ct_mask_is_the_back_mapping(session)  # removed region included
    # Undo brings back exactly the mask before the positive click.
    session.undo()
    assert np.array_equal(session.mask_on_ct(), after_negative)
    # Without region removal the same clicks leave part of the false region.
    alone = _session(chgj015, box_centre, region_removal=False)
    alone.add_click(_ras(alone, on_brain), positive=False)
    result = alone.add_click(_ras(alone, on_tumour), positive=True)
    assert alone.mask_on_working_grid()[brain].sum() > 0 and result.removed_ml == 0.0


def test_a_negative_click_on_the_tumours_own_region_never_erases_it(chgj015, box_centre, brain_and_tumour):
    _, _, on_tumour = brain_and_tumour
    session = _session(chgj015, box_centre)
    truth = truth_on_grid(chgj015[2], session.grid)
    tumour_region = next(r for r in _regions(session) if (r & truth).any())
    # A negative click on an edge voxel of the tumour's region, then a positive click in it.
    edge = tumour_region & ~ndimage.binary_erosion(tumour_region)
    on_edge = tuple(int(v) for v in np.argwhere(edge)[0])
    assert session.add_click(_ras(session, on_edge), positive=False).removed_ml == 0.0
    result = session.add_click(_ras(session, on_tumour), positive=True)
    assert result.removed_ml == 0.0
    assert result.details["kept_rejected"] == 1  # what the user is told: the marked region stays
    # The rule changed nothing: the mask is the network's alone, and the tumour is still there.
    alone = _session(chgj015, box_centre, region_removal=False)
    alone.add_click(_ras(alone, on_edge), positive=False)
    alone.add_click(_ras(alone, on_tumour), positive=True)
    assert np.array_equal(session.mask_on_ct(), alone.mask_on_ct())
    assert (session.mask_on_working_grid().astype(bool) & truth).sum() > 0.25 * truth.sum()


def test_the_fast_path_removes_regions_outside_its_window(chgj015, box_centre, brain_and_tumour):
    """A 16^3 window around the tumour click, yet the brain region far away is removed and
    the CT mask follows it."""
    brain, on_brain, on_tumour = brain_and_tumour
    session = _session(chgj015, box_centre, refine_mode="fast", fast_window=16)
    session.add_click(_ras(session, on_brain), positive=False)
    result = session.add_click(_ras(session, on_tumour), positive=True)
    assert result.mode == "fast" and result.removed_ml > 0
    window = np.zeros(brain.shape, dtype=bool)
    window[tuple(slice(a, b) for a, b in result.window)] = True
    assert (brain & ~window).any()
    assert not session.mask_on_working_grid()[brain].any()
    assert_ct_mask_is_the_back_mapping(session)
    assert_tracked_statistics_exact(session)  # the fast path's statistics followed the removal too
