"""A card's optional ``unanchored`` stage: the refinement members for a negative click made before
any positive click while the ROI was placed automatically (nobody has yet said which hot region
is the tumour); every other click is refined by the ``refine`` members.

Tiny real networks whose output bias is pushed far up (``refine``: everything is tumour) or far
down (``unanchored``: nothing is), so the mask shows which stage answered a click."""
from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from InteractiveRefineLib.errors import ModelPackageError
from InteractiveRefineLib.model_package import load_model_package
from InteractiveRefineLib.session import RefinementSession

from conftest import hot_sphere_pair, unanchored_package


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    return unanchored_package(tmp_path_factory.mktemp("unanchored"))


@pytest.fixture(scope="module")
def image():
    return hot_sphere_pair()


def _session(package_dir, image, roi_center_ras=None, **kwargs):
    session = RefinementSession(str(package_dir), device="cpu", **kwargs)
    session.set_image(*image, roi_center_ras=roi_center_ras)
    session.initial()
    return session


def _ras(session, kji):
    return session.grid.index_to_ras(np.array(kji[::-1], dtype=float))


def test_the_package_lists_and_loads_the_optional_stage(package_dir):
    package = load_model_package(package_dir)
    assert package.spec.member_stages == ("initial", "refine", "unanchored")
    assert len(package.networks["unanchored"]) == 1
    assert package.spec.stages["unanchored"].inputs == package.spec.stages["refine"].inputs
    card = json.loads((package_dir / "model.json").read_text())
    assert card["members"]["unanchored"][0]["file"] == "unanchored_0.safetensors"


def test_an_unknown_or_empty_member_stage_is_refused(package_dir, tmp_path):
    copy_dir = shutil.copytree(package_dir, tmp_path / "package")
    card = json.loads((copy_dir / "model.json").read_text())
    for members, message in (({**card["members"], "unanchord": card["members"]["unanchored"]}, "unanchord"),
                             ({**card["members"], "unanchored": []}, "members.unanchored")):
        bad = copy.deepcopy(card)
        bad["members"] = members
        (copy_dir / "model.json").write_text(json.dumps(bad))
        with pytest.raises(ModelPackageError, match=message):
            load_model_package(copy_dir)


@pytest.mark.parametrize("roi", [None, "ct"])
def test_a_negative_click_before_any_positive_one_at_an_automatic_roi_uses_the_stage(package_dir, image, roi):
    session = _session(package_dir, image, roi)
    assert not session.roi_placement.given
    first = session.add_click(_ras(session, (30, 30, 30)), positive=False)
    assert first.details["stage"] == "unanchored" and first.voxels == 0  # the -50 bias: nothing left
    positive = session.add_click(_ras(session, (20, 20, 20)), positive=True)
    assert "stage" not in positive.details and positive.voxels > 0  # the refine members from now on
    later = session.add_click(_ras(session, (10, 40, 30)), positive=False)
    assert "stage" not in later.details and later.voxels > 0
    session.undo()
    session.undo()
    assert session.history.current.details["stage"] == "unanchored"  # undo restores it as it was


def test_at_the_users_roi_every_click_uses_the_refine_members(package_dir, image):
    automatic = _session(package_dir, image)
    given = _session(package_dir, image, automatic.roi_placement.center_ras)
    assert given.roi_placement.given
    result = given.add_click(_ras(given, (30, 30, 30)), positive=False)
    assert "stage" not in result.details and result.voxels > 0


def test_without_the_stage_the_refine_members_answer(tiny_package_dir, image):
    session = _session(tiny_package_dir, image)
    result = session.add_click(_ras(session, (30, 30, 30)), positive=False)
    assert "stage" not in result.details


def test_a_fast_session_refines_an_unanchored_click_over_the_whole_roi(package_dir, image):
    session = _session(package_dir, image, refine_mode="fast", fast_window=16)
    result = session.add_click(_ras(session, (30, 30, 30)), positive=False)
    assert result.window is None and result.details["stage"] == "unanchored"
    assert result.voxels == 0
    again = session.add_click(_ras(session, (20, 20, 20)), positive=True)
    assert again.window is not None  # the refine members run in their window again


def test_the_uncertainty_of_an_unanchored_step_comes_from_its_stage(package_dir, image):
    """The augmented passes re-run what produced the current mask: after an unanchored click the
    unanchored members (nothing is tumour), after a "tumour" click the refine members (everything)."""
    from InteractiveRefineLib.uncertainty import estimate

    session = _session(package_dir, image)
    session.add_click(_ras(session, (30, 30, 30)), positive=False)
    assert estimate(session, passes=2).mean.max() < 0.01
    session.add_click(_ras(session, (20, 20, 20)), positive=True)
    centre = (slice(12, 36),) * 3  # a rotated pass leaves the ROI's corners empty
    assert estimate(session, passes=2).mean[centre].min() > 0.99
