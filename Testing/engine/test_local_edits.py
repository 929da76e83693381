"""Local edits after a PET threshold region: once the mask is a threshold region (a card's
``local_edits_after_threshold``), a network click keeps only the changes connected to itself, so a
click on one error of the region cannot undo a correct part of it elsewhere or add hot tissue far
away.

The rule's pure function on small masks, then sessions with the shipped model on a hot-sphere
phantom and on the real head-and-neck case CHGJ015."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from InteractiveRefineLib import constraints
from InteractiveRefineLib.cli import main
from InteractiveRefineLib.errors import ModelPackageError
from InteractiveRefineLib.geometry import read_volume
from InteractiveRefineLib.model_package import load_model_package
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.simulation import label_centroid_ras, truth_on_grid
from scipy import ndimage
from session_checks import assert_ct_mask_is_the_back_mapping

from conftest import data_path, hot_sphere_pair

CUBE = np.ones((3, 3, 3), dtype=bool)


def _masks():
    """A previous mask with a tumour A and a far region B; a proposal that grows A, drops B and
    adds a new far region C."""
    previous = np.zeros((30, 30, 30), dtype=np.float16)
    previous[4:10, 4:10, 4:10] = 1  # A
    previous[20:26, 20:26, 20:26] = 1  # B
    proposal = np.zeros_like(previous)
    proposal[4:13, 4:10, 4:10] = 1  # A grown towards the click at (11, 6, 6)
    proposal[20:26, 4:8, 20:26] = 1  # C
    return previous, proposal


@pytest.mark.parametrize("classes", [1, 2])
def test_only_the_changes_connected_to_the_click_are_kept(classes):
    previous, proposal = _masks()
    if classes == 2:  # the same masks in the GTVn channel, an empty GTVp
        previous, proposal = (np.stack([np.zeros_like(a), a]) for a in (previous, proposal))
    box = constraints.keep_connected_changes(proposal, previous, (11, 6, 6), 0.5)
    mask = proposal.max(0) if classes == 2 else proposal
    assert mask[4:13, 4:10, 4:10].all()  # the click's edit: A grown
    assert mask[20:26, 20:26, 20:26].all()  # B back
    assert not mask[20:26, 4:8, 20:26].any()  # C gone
    assert box == (slice(20, 26), slice(4, 26), slice(20, 26))  # the reset voxels' box (B and C)


def test_nothing_is_reset_when_every_change_is_the_clicks():
    previous, proposal = _masks()
    proposal[20:26, 20:26, 20:26] = 1
    proposal[20:26, 4:8, 20:26] = 0
    before = proposal.copy()
    assert constraints.keep_connected_changes(proposal, previous, (11, 6, 6), 0.5) is None
    assert np.array_equal(proposal, before)


@pytest.mark.parametrize("key, attribute, bad", [("local_edits_after_threshold", "local_edits", "yes"),
                                                  ("local_edits_positive_clicks", "local_edits_positive", 1)])
def test_a_bad_card_value_is_refused(tiny_package_dir, tmp_path, key, attribute, bad):
    package = shutil.copytree(tiny_package_dir, tmp_path / "package")
    card = json.loads((package / "model.json").read_text())
    card[key] = bad
    (package / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match=key):
        load_model_package(package)
    card[key] = True
    (package / "model.json").write_text(json.dumps(card))
    assert getattr(RefinementSession(str(package), device="cpu"), attribute) is True
    overridden = RefinementSession(str(package), device="cpu", **{attribute: False})
    assert getattr(overridden, attribute) is False
    assert getattr(RefinementSession(str(tiny_package_dir), device="cpu"), attribute) is False


def _sphere_session(package, local_edits, local_edits_positive=False):
    ct, pet = hot_sphere_pair()
    session = RefinementSession(package, device="cpu", refine_mode="full", amp=False, local_edits=local_edits,
                                local_edits_positive=local_edits_positive, threshold_start=False)
    session.set_image(ct, pet, allow_low_pet_coverage=True)  # a 90 mm phantom in the 144 mm ROI
    session.initial()
    return session


def _unconnected_changes(before, after, index):
    """Changed voxels in regions of change that do not come within 2 voxels of ``index``."""
    labels, _ = ndimage.label(before != after, structure=CUBE)
    near = labels[tuple(slice(max(c - 2, 0), c + 3) for c in index)]
    return (labels > 0) & ~np.isin(labels, near[near > 0])


SPHERE_RAS = np.array([50.0, 45.0, 48.0])  # the hot sphere's centre (radius 12 mm)
EDGE_RAS = np.array([50.0, 45.0, 58.0])  # inside the sphere, near its top


def _assert_the_click_edits_locally(free, local, ras, positive):
    """From the same mask, the network alone (``free``) changes it away from the click too; the
    ``local`` session keeps only what connects to the click, and its CT mask follows."""
    before = local.mask_on_working_grid().copy()
    assert np.array_equal(before, free.mask_on_working_grid())
    index = local.click_index(ras)
    free.add_click(ras, positive=positive)
    local.add_click(ras, positive=positive)
    assert _unconnected_changes(before, free.mask_on_working_grid(), index).any()
    assert not _unconnected_changes(before, local.mask_on_working_grid(), index).any()
    assert (local.mask_on_working_grid() != before).any()
    assert_ct_mask_is_the_back_mapping(local)


def test_after_a_threshold_region_a_click_changes_only_what_connects_to_it():
    free = _sphere_session(load_model_package(), local_edits=False)
    local = _sphere_session(load_model_package(), local_edits=True)
    for session in (free, local):
        session.add_threshold(SPHERE_RAS)
    # a "tumour" click beside the region: the network alone also changes the region's far side
    _assert_the_click_edits_locally(free, local, SPHERE_RAS + np.array([0.0, 12.0, 0.0]), positive=True)
    # Undo is exact, and the float32 replay of the history gives the same mask.
    after = local.mask_on_ct().copy()
    local.add_click(SPHERE_RAS + 3.0, positive=True)
    local.undo()
    assert np.array_equal(local.mask_on_ct(), after)
    local.confirm()
    assert np.array_equal(local.mask_on_ct(), after)


def test_without_a_threshold_region_the_network_answers_alone(tiny_package_dir):
    free = _sphere_session(str(tiny_package_dir), local_edits=False)
    local = _sphere_session(str(tiny_package_dir), local_edits=True)
    for session in (free, local):
        session.add_click(EDGE_RAS, positive=True)
        session.add_click(SPHERE_RAS, positive=False)
    assert np.array_equal(free.mask_on_ct(), local.mask_on_ct())


@pytest.fixture(scope="module")
def chgj015():
    folder = data_path("hecktor2020_chgj015")
    return tuple(read_volume(folder / name)
                 for name in ("CHGJ015_ct.nii.gz", "CHGJ015_pt.nii.gz", "CHGJ015_ct_gtvt.nii.gz"))


def _chgj015_session(chgj015, **kwargs):
    ct, pet, label = chgj015
    session = RefinementSession(load_model_package(), device="cpu", refine_mode="full", amp=False,
                                threshold_start=True, **kwargs)
    session.set_image(ct, pet, roi_center_ras=label_centroid_ras(label))
    session.initial()
    return session


def _centre_and_rim(session, label):
    """The tumour's innermost voxel and the region's rim voxel farthest from it (working grid)."""
    truth = truth_on_grid(label, session.grid).astype(bool)
    depth = ndimage.distance_transform_edt(truth)
    centre = tuple(int(v) for v in np.unravel_index(int(np.argmax(depth)), truth.shape))
    session.add_click(_ras(session, centre), positive=True)
    region = session.mask_on_working_grid().astype(bool)
    rim = np.argwhere(region & ~ndimage.binary_erosion(region))
    return centre, tuple(int(v) for v in rim[np.argmax(((rim - centre) ** 2).sum(1))])


def _ras(session, kji):
    return session.grid.index_to_ras(np.array(kji[::-1], dtype=float))


def test_a_second_click_edits_the_threshold_region_only_where_it_is_on_chgj015(chgj015, tmp_path):
    """The shipped model, ROI at the tumour: the first "tumour" click is the 40 % region (the
    card's threshold start); a "not tumour" click on its rim changes only what connects to it,
    in the engine and on the command line."""
    unconnected, masks = {}, {}
    for local in (False, True):
        session = _chgj015_session(chgj015, local_edits=local)
        centre, edge = _centre_and_rim(session, chgj015[2])
        assert session.clicks[0].kind == "threshold"
        region = session.mask_on_working_grid().copy()
        session.add_click(_ras(session, edge), positive=False)
        unconnected[local] = int(_unconnected_changes(region, session.mask_on_working_grid(), edge).sum())
        masks[local] = session.mask_on_ct()
    assert unconnected[False] > 0  # the network alone also changes the mask away from the click
    assert unconnected[True] == 0
    # The command line: --local-edits (as the card of a 0.4.1 package says) and --no-local-edits.
    folder = data_path("hecktor2020_chgj015")
    roi = ",".join(f"{v:.6f}" for v in label_centroid_ras(chgj015[2]))
    clicks = [f"+{','.join(f'{v:.6f}' for v in _ras(session, centre))}",
              f"-{','.join(f'{v:.6f}' for v in _ras(session, edge))}"]
    for local, flag in ((True, "--local-edits"), (False, "--no-local-edits")):
        out = tmp_path / f"{flag}.nii.gz"
        images = ["--ct", str(folder / "CHGJ015_ct.nii.gz"), "--pet", str(folder / "CHGJ015_pt.nii.gz")]
        assert main(["segment", *images, "--device", "cpu", "--refine-mode", "full", "--precision", "float32",
                     f"--roi-center={roi}", "--threshold-start", flag, *[f"--click={c}" for c in clicks],
                     "--out", str(out)]) == 0
        assert np.array_equal(read_volume(out).array, masks[local])


def test_positive_clicks_change_only_what_connects_to_them_and_negative_clicks_are_the_networks():
    """``local_edits_positive``: without any threshold region, a positive click keeps only the
    changes connected to it; a negative click is the network's answer, as without the option."""
    free = _sphere_session(load_model_package(), local_edits=False)
    local = _sphere_session(load_model_package(), local_edits=False, local_edits_positive=True)
    _assert_the_click_edits_locally(free, local, SPHERE_RAS + np.array([0.0, 0.0, -9.0]), positive=True)
    # a negative click: the network's answer, as without the option
    free = _sphere_session(load_model_package(), local_edits=False)
    local = _sphere_session(load_model_package(), local_edits=False, local_edits_positive=True)
    for session in (free, local):
        session.add_click(EDGE_RAS, positive=False)
    assert np.array_equal(free.mask_on_ct(), local.mask_on_ct())
