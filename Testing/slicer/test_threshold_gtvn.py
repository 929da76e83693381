"""The PET threshold tool for lymph nodes (GTVn) in the Slicer Logic on real MRML: with a two-class
model a point of the "IR node region (GTVn)" list (``addThreshold(..., label="gtvn")``) replaces
the GTVn with the PET region, the status line names the class, undo and replay are exact; a
refusal (no uptake) changes nothing; a one-class model refuses GTVn regions and keeps its status.

The network is random (tiny two-class package on the engine's phantom): the tests assert what the
module writes and keeps, not what the model predicts.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from InteractiveRefineLib.model_package import create_random_model_package
from InteractiveRefineLib.networks import TINY_NETWORK, TINY_ROI


@pytest.fixture(scope="module")
def two_class_dir(tmp_path_factory):
    return create_random_model_package(tmp_path_factory.mktemp("gtvp_gtvn_threshold"), network=TINY_NETWORK,
                                       roi_size_vox=TINY_ROI, seed=0, outputs=2)


def _segment(logic, module, model, cold=False):
    """Segment the phantom; returns the world RAS of its tumour's hottest voxel inside the ROI."""
    ct, pet, truth = module.InteractiveRefineTest._phantom()
    if cold:  # no uptake to threshold: the PET divided by 50
        matrix = vtk.vtkMatrix4x4()
        pet.GetIJKToRASMatrix(matrix)
        pet = slicer.util.addVolumeFromArray(slicer.util.arrayFromVolume(pet) / 50.0, name="cold PET")
        pet.SetIJKToRASMatrix(matrix)
    roi, _ = module.InteractiveRefineTest._roiOnTumourBorder(ct, truth)
    logic.segment(ct, pet, None, roi, modelPath=str(model), device="cpu")
    kji = np.argwhere(truth)
    centre = kji[np.argmin(np.linalg.norm(kji - kji.mean(axis=0), axis=1))]
    matrix = vtk.vtkMatrix4x4()
    ct.GetIJKToRASMatrix(matrix)
    return (slicer.util.arrayFromVTKMatrix(matrix) @ np.append(centre[::-1], 1.0))[:3]


def _segments(logic) -> dict:
    return {name: logic.segmentMask(name).copy() for name in ("gtvp", "gtvn")}


def test_a_gtvn_region_replaces_the_gtvn_and_is_a_click_like_the_others(logic, module, two_class_dir):
    hot = _segment(logic, module, two_class_dir)
    assert logic.getNodalThresholdNode(create=False) is not None  # made with the session (place button)
    initial = _segments(logic)
    result = logic.addThreshold(hot, label="gtvn")
    assert result.mode == "threshold"
    details = result.details["threshold"]
    assert f"40 % SUVmax GTVn region, SUVmax {details['suvmax']:.1f}" in logic.lastStatus
    assert "(GTVn region)" in logic.lastStatus  # the click's class, as for the other clicks
    click = logic.session.clicks[-1]
    assert click.kind == "threshold" and click.label == "gtvn"
    regionNode = logic.getNodalThresholdNode()
    assert regionNode.GetNumberOfControlPoints() == 1
    assert regionNode.GetNthControlPointDescription(0) == "fraction=0.4"
    assert logic.getThresholdNode().GetNumberOfControlPoints() == 0  # not the GTVp's list
    assert logic.getParameterNode().GetParameter("clickOrder").startswith("R")
    after = _segments(logic)
    labels = logic.session.mask_on_ct()
    np.testing.assert_array_equal(after["gtvn"], (labels == 2).astype(np.uint8))
    np.testing.assert_array_equal(after["gtvp"], (labels == 1).astype(np.uint8))
    assert after["gtvn"].any() and after["gtvn"][tuple(module.InteractiveRefineTest.worldToCtIndex(
        logic.params.ct, hot))] == 1
    # The GTVp keeps its voxels outside the region (the region takes only its own voxels; the
    # GTVn voxels it replaces may fall to the GTVp, as the engine's label map says).
    kept = (initial["gtvp"] == 1) & (after["gtvn"] == 0)
    assert np.all(after["gtvp"][kept] == 1)

    # Replay (a reloaded scene): the region point is a GTVn threshold again, with its fraction.
    logic.params.thresholdPercent = 50  # a later change does not re-mean the placed point
    logic.endSession("test")
    logic.replayClicks()
    click = logic.session.clicks[-1]
    assert click.kind == "threshold" and click.label == "gtvn"
    assert dict(click.options)["fraction"] == pytest.approx(0.4)
    np.testing.assert_array_equal(logic.labelMap(), labels)

    logic.undo()  # exact, both segments
    for name, mask in _segments(logic).items():
        np.testing.assert_array_equal(mask, initial[name])
    assert regionNode.GetNumberOfControlPoints() == 0

    # The GTVp's region keeps its own list and names its class for a two-class model.
    logic.addThreshold(hot)
    assert logic.session.clicks[-1].label is None and logic.getThresholdNode().GetNumberOfControlPoints() == 1
    assert "% SUVmax GTVp region" in logic.lastStatus


def test_a_gtvn_region_placed_in_a_view(logic, module, two_class_dir):
    hot = _segment(logic, module, two_class_dir)
    logic.getNodalThresholdNode().AddControlPointWorld(*hot)  # as if placed with its button
    assert [(c.kind, c.label) for c in logic.session.clicks] == [("threshold", "gtvn")]
    assert "GTVn region" in logic.lastStatus


def test_a_refused_gtvn_region_changes_nothing(logic, module, two_class_dir):
    hot = _segment(logic, module, two_class_dir, cold=True)
    before = _segments(logic)
    messages = []
    logic.errorCallback = messages.append
    with pytest.raises(ValueError, match="SUV"):
        logic.addThreshold(hot, label="gtvn")
    logic.getNodalThresholdNode().AddControlPointWorld(*hot)  # the same, placed in a view
    assert len(messages) == 1 and "SUV" in messages[0]
    assert logic.getNodalThresholdNode().GetNumberOfControlPoints() == 0
    assert logic.session.clicks == () and logic.getParameterNode().GetParameter("clickOrder") == ""
    for name, mask in _segments(logic).items():
        np.testing.assert_array_equal(mask, before[name])


def test_one_class_model_refuses_a_gtvn_region_and_keeps_its_threshold_tool(logic, module, tiny_package_dir,
                                                                             scene):
    hot = _segment(logic, module, tiny_package_dir)
    assert logic.getNodalThresholdNode(create=False) is None  # no GTVn list for a one-class model
    before = logic.segmentMask().copy()
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="segments only gtvp"):
        logic.addThreshold(hot, label="gtvn")
    assert scene.GetNumberOfNodes() == nodes and logic.session.clicks == ()
    np.testing.assert_array_equal(logic.segmentMask(), before)
    logic.addThreshold(hot)  # today's tool, today's status
    assert "40 % SUVmax region, SUVmax" in logic.lastStatus and "GTVp region" not in logic.lastStatus
