"""The ``pet_region`` network input: the one-click 40 % SUVmax regions of the positive clicks as
a refine channel (a card input and its builder; no session change), its card checks, and the
same channel from the training package's function."""
from __future__ import annotations

import json

import numpy as np
import pytest
from InteractiveRefineLib.errors import ModelPackageError
from InteractiveRefineLib.geometry import Volume
from InteractiveRefineLib.inputs.pet_region import region_channel
from InteractiveRefineLib.model_package import create_random_model_package, load_model_package
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.threshold import region_in_array, threshold_region

from conftest import TINY_NETWORK, TINY_ROI

SHAPE = (64, 64, 64)  # 1 mm voxels, identity geometry: RAS = (i, j, k)
HOT = (32, 32, 22)  # a lesion of SUV 10 (core radius 4 mm, 45 % shell to 7 mm)
WARM = (32, 32, 44)  # a lesion of SUV 6
PET_REGION = {"name": "pet_region", "options": {"fraction": 0.4, "radius_mm": 10.0}}


def _radius(centre):
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")
    return np.sqrt((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2)


@pytest.fixture(scope="module")
def images():
    pet = np.ones(SHAPE, np.float32)
    for centre, suv in ((HOT, 10.0), (WARM, 6.0)):
        r = _radius(centre)
        pet[r < 7] = 0.45 * suv
        pet[r < 4] = suv
    ct = np.where(pet > 1, 40.0, 20.0).astype(np.float32)
    return Volume.from_array(ct, np.eye(4)), Volume.from_array(pet, np.eye(4))


@pytest.fixture(scope="module")
def region_package(tmp_path_factory):
    path = create_random_model_package(tmp_path_factory.mktemp("pet_region"), network=TINY_NETWORK,
                                       roi_size_vox=TINY_ROI, seed=0, refine_extra=[PET_REGION])
    return load_model_package(path)


def test_the_array_region_is_the_threshold_tools_region(images):
    _, pet = images
    for centre in (HOT, WARM):
        click = (centre[0], centre[1] + 3, centre[2])  # 3 mm off the peak
        tool = threshold_region(pet, np.array(click[::-1], float))
        assert np.array_equal(region_in_array(pet.array, click, (1.0, 1.0, 1.0)), tool.mask)
    assert region_in_array(pet.array, (5, 5, 5), (1.0, 1.0, 1.0)) is None  # SUV 1: no uptake


def test_the_channel_is_the_union_of_the_positive_clicks_regions(images):
    _, pet = images
    memo = {}
    both = region_channel(pet.array, [HOT, WARM], (1.0, 1.0, 1.0), memo=memo)
    assert set(np.unique(both)) == {0.0, 1.0}
    assert np.array_equal(both > 0, (_radius(HOT) < 7) | (_radius(WARM) < 7))
    assert len(memo) == 2  # each click's region found once
    assert np.array_equal(region_channel(pet.array, [HOT], (1.0, 1.0, 1.0), {"fraction": 0.5}) > 0,
                          _radius(HOT) < 4)


def test_a_session_feeds_the_region_of_its_positive_clicks_only(region_package, images):
    assert region_package.spec.stages["refine"].in_channels == 6
    session = RefinementSession(region_package, device="cpu", refine_mode="full")
    session.set_image(*images, roi_center_ras=np.array([32.0, 32.0, 32.0]))
    session.initial()
    channel = region_package.spec.stages["refine"].channel("pet_region")
    assert not session.refine_input()[0, channel].any()  # no click: no region
    session.add_click(np.array(HOT[::-1], float), positive=True)
    after_one = session.refine_input()[0, channel].numpy() > 0
    grid = session.image.grid
    expected = region_in_array(session.image.pet_suv, grid.ras_to_index(np.array(HOT[::-1], float))[::-1],
                               tuple(grid.spacing[::-1]))
    assert after_one.any() and np.array_equal(after_one, expected)
    session.add_click(np.array(WARM[::-1], float), positive=False)  # a "not tumour" click adds nothing
    assert np.array_equal(session.refine_input()[0, channel].numpy() > 0, after_one)
    session.undo()
    session.undo()
    assert not session.refine_input()[0, channel].any()


def test_a_classic_card_keeps_no_suv_copy(tiny_package, images):
    session = RefinementSession(tiny_package, device="cpu")
    session.set_image(*images, roi_center_ras=np.array([32.0, 32.0, 32.0]))
    assert session.image.pet_suv is None


def _card_with(tmp_path, entry, image_channels=("ct", "pet")):
    path = create_random_model_package(tmp_path / "p", network=TINY_NETWORK, roi_size_vox=TINY_ROI,
                                       image_channels=image_channels, refine_extra=[PET_REGION])
    card = json.loads((path / "model.json").read_text())
    card["inputs"]["refine"][-1] = entry
    (path / "model.json").write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("entry, message", [
    ({"name": "pet_region", "options": {"fraction": 0.4, "radius": 10}}, "options"),
    ({"name": "pet_region", "options": {"fraction": "forty"}}, "options"),
])
def test_bad_pet_region_options_are_refused_at_load(tmp_path, entry, message):
    with pytest.raises(ModelPackageError, match=message):
        load_model_package(_card_with(tmp_path, entry))


def test_a_ct_only_model_cannot_read_pet_regions(tmp_path):
    with pytest.raises(ModelPackageError, match="image_channels include 'pet'"):
        create_random_model_package(tmp_path / "ct", network=TINY_NETWORK, roi_size_vox=TINY_ROI,
                                    image_channels=("ct",), refine_extra=[PET_REGION])


def test_a_ct_only_run_of_a_pet_optional_model_has_no_region(tmp_path, images):
    """Without PET (a card with ``pet_optional``) the region channel is zero, as in training
    with the PET dropped."""
    path = create_random_model_package(tmp_path / "opt", network=TINY_NETWORK, roi_size_vox=TINY_ROI,
                                       refine_extra=[PET_REGION])
    card = json.loads((path / "model.json").read_text())
    card["preprocessing"]["pet_optional"] = True
    (path / "model.json").write_text(json.dumps(card))
    session = RefinementSession(load_model_package(path), device="cpu", refine_mode="full")
    session.set_image(images[0], None, roi_center_ras=np.array([32.0, 32.0, 32.0]))
    session.initial()
    session.add_click(np.array(HOT[::-1], float), positive=True)
    channel = session.card.stages["refine"].channel("pet_region")
    assert session.image.pet_suv is None and not session.refine_input()[0, channel].any()
