"""Show uncertainty on real MRML (slicer-core): the entropy map as a volume node on the CT geometry,
the suggested next click as a markups point, accepting it as a click, and refusing before Segment.

The network is the tiny random one on the engine's phantom: the map carries no meaning, so these
tests assert what the user sees: the node, its geometry, its value range and the click history.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import slicer
import vtk

LN2 = math.log(2.0)


def ijk_to_world(logic, node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return logic.transformToWorld(node) @ slicer.util.arrayFromVTKMatrix(matrix)


def node_ids(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


@pytest.fixture
def segmented(logic, module, tiny_package_dir):
    """The phantom under a translation, segmented with the tiny model and a 40 mm ROI on its tumour."""
    ct, pet, truth = module.InteractiveRefineTest._phantom()
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    shift = np.eye(4)
    shift[:3, 3] = (5.0, -3.0, 2.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    for node in (ct, pet):
        node.SetAndObserveTransformNodeID(transform.GetID())
    roi, _ = module.InteractiveRefineTest._roiOnTumourBorder(ct, truth)
    roi.SetAndObserveTransformNodeID(transform.GetID())
    logic.segment(ct, pet, None, roi, modelPath=str(tiny_package_dir), device="cpu")
    return ct, transform


def test_show_uncertainty_writes_entropy_on_ct_geometry(logic, segmented):
    ct, transform = segmented
    node = logic.showUncertainty()
    assert node.GetName() == "IR uncertainty"
    array = slicer.util.arrayFromVolume(node)
    assert array.shape == slicer.util.arrayFromVolume(ct).shape
    assert array.min() >= 0.0 and array.max() <= LN2 + 1e-6
    assert array.max() > 0.0  # the working grid holds some uncertainty
    np.testing.assert_allclose(ijk_to_world(logic, node), ijk_to_world(logic, ct), atol=1e-6)
    assert node.GetTransformNodeID() == transform.GetID()
    display = node.GetDisplayNode()
    assert display.GetWindowLevelMin() == pytest.approx(0.0)
    assert display.GetWindowLevelMax() == pytest.approx(LN2)
    assert display.GetColorNode() is not None and display.GetColorNode().GetNumberOfColors() > 1
    assert logic.lastUncertainty.entropy.shape == logic.session.grid.shape
    assert "8 passes" in logic.uncertaintyStatus and " s, " in logic.uncertaintyStatus

    # Again: the same node, replaced; no second volume.
    again = logic.showUncertainty(passes=2)
    assert again.GetID() == node.GetID()
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3  # CT, PET, map
    assert "2 passes" in logic.uncertaintyStatus


def test_accepting_the_suggestion_adds_one_click_and_undo_removes_it(logic, segmented):
    logic.showUncertainty()
    suggestion = logic.lastUncertainty.suggestion
    assert suggestion is not None, "the tiny model left no uncertain region on the phantom"
    node = logic.getSuggestionNode()
    assert node.GetName() == "IR suggested" and node.GetNumberOfControlPoints() == 1
    assert node.GetNthControlPointLabel(0) == ("tumour?" if suggestion.positive else "not tumour?")
    ras = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(0, ras)
    np.testing.assert_allclose(ras, suggestion.ras, atol=1e-4)
    steps = len(logic.session.history)

    logic.acceptSuggestion()
    assert len(logic.session.history) == steps + 1 and len(logic.session.clicks) == 1
    click = logic.session.clicks[0]
    assert click.positive == suggestion.positive
    np.testing.assert_allclose(click.ras, suggestion.ras, atol=1e-4)
    positive, negative = logic.getClickNodes()
    placed = positive if suggestion.positive else negative
    assert placed.GetNumberOfControlPoints() == 1
    assert node.GetNumberOfControlPoints() == 0  # the suggestion is used up
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())
    with pytest.raises(ValueError, match="No suggested point"):
        logic.acceptSuggestion()

    logic.undo()
    assert len(logic.session.clicks) == 0 and len(logic.session.history) == steps
    assert placed.GetNumberOfControlPoints() == 0


def test_a_new_step_removes_a_stale_suggestion(logic, segmented):
    logic.showUncertainty()
    suggestion = logic.lastUncertainty.suggestion
    assert logic.getSuggestionNode().GetNumberOfControlPoints() == 1
    logic.addClick(suggestion.ras, not suggestion.positive)  # the user clicks there himself, flipped
    assert logic.session.clicks[-1].positive == (not suggestion.positive)
    assert logic.suggestion() is None  # of the state before the click: gone
    assert logic.getUncertaintyNode() is not None  # the map stays until shown again
    logic.undo()
    with pytest.raises(ValueError, match="No suggested point: press Show uncertainty first"):
        logic.acceptSuggestion()
    assert len(logic.session.clicks) == 0


def test_before_segment_a_clear_error_and_no_node(logic, module, scene):
    module.InteractiveRefineTest._phantom()
    before = node_ids(scene)
    with pytest.raises(ValueError, match="No segmentation yet: press Segment first"):
        logic.showUncertainty()
    with pytest.raises(ValueError, match="No segmentation yet: press Segment first"):
        logic.acceptSuggestion()
    assert node_ids(scene) == before
    assert logic.getUncertaintyNode() is None and logic.getSuggestionNode() is None


def test_bad_passes_are_refused_and_change_nothing(logic, segmented, scene):
    before = node_ids(scene)
    for passes in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="passes must be a positive whole number"):
            logic.showUncertainty(passes=passes)
    assert node_ids(scene) == before
