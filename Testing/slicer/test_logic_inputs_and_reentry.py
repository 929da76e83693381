"""Session inputs, re-entrant actions, RTSTRUCT targets and engine warnings on real MRML with
the STS_001 PET/CT and the tiny random network: the session keeps its own nodes, one action at
a time, RTSTRUCT-like targets are refused before anything changes, and engine warnings reach the
user."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import slicer
import vtk
from test_logic import pick_clicks, segment_sts, segmentation_node


def gtvp(seg, ct):
    segment_id = seg.GetSegmentation().GetSegmentIdBySegmentName("GTVp")
    return slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, ct)


# ------------------------------------------------------------------ item 2
def test_choosing_another_ct_ends_the_session_and_keeps_the_clicks(logic, module, sts_nodes, tiny_package_dir,
                                                                   scene):
    ct, pet, _ = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    logic.addClick(positive_ras, positive=True)
    seg = segmentation_node(logic)
    before = gtvp(seg, ct)
    other = slicer.util.addVolumeFromArray(np.zeros((20, 30, 40), np.int16), name="another CT")
    logic.params.ct = other  # what the CT selector does
    assert logic.session is None and logic.sessionNodes is None
    _, negative_node = logic.getClickNodes()
    negative_node.AddControlPointWorld(*negative_ras)  # placed in a view afterwards: recorded, no error
    assert negative_node.GetNumberOfControlPoints() == 1
    assert logic.getParameterNode().GetParameter("clickOrder") == "+1;-1"
    np.testing.assert_array_equal(gtvp(seg, ct), before)  # nothing written onto any grid
    with pytest.raises(ValueError, match="press Segment first"):
        logic.addClick(negative_ras, positive=False)
    logic.params.ct = ct
    logic.replayClicks()  # the kept clicks continue on the original inputs
    assert [c.positive for c in logic.session.clicks] == [True, False]


def test_create_new_segmentation_ends_the_session_cleanly(logic, module, sts_nodes, tiny_package_dir, scene):
    ct, pet, _ = sts_nodes
    roi = segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, _ = pick_clicks(module, logic, sts_nodes)
    messages = []
    logic.errorCallback = messages.append
    new = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "new")  # "Create new segmentation"
    logic.params.segmentation = new
    assert logic.session is None
    positive_node, _ = logic.getClickNodes()
    positive_node.AddControlPointWorld(*positive_ras)  # no NoneType error
    assert messages == []
    logic.segment(ct, pet, new, roi, modelPath=str(tiny_package_dir), device="cpu")
    assert segmentation_node(logic) is new and logic.session is not None


@pytest.mark.parametrize("which", ["pet", "segmentation", "roi"])
def test_removing_a_session_node_ends_the_session(logic, module, sts_nodes, tiny_package_dir, scene, which):
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, _ = pick_clicks(module, logic, sts_nodes)
    scene.RemoveNode(getattr(logic.sessionNodes, which))
    assert logic.session is None
    with pytest.raises(ValueError, match="press Segment first"):
        logic.addClick(positive_ras, positive=True)


# ------------------------------------------------------------------ item 5
def test_an_action_from_a_callback_is_refused_and_a_placed_point_waits(logic, module, sts_nodes,
                                                                       tiny_package_dir):
    """A callback that processes events (the Widget's) can deliver Undo or a new point while a step
    runs: the nested Undo is refused, the point is applied after the step."""
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    _, negative_node = logic.getClickNodes()
    nested, busy = [], []
    logic.busyCallback = busy.append

    def during_the_step(message):
        if nested or not logic.busy:
            return
        with pytest.raises(ValueError, match="busy"):
            logic.undo()
        with pytest.raises(ValueError, match="busy"):
            logic.reset()
        negative_node.AddControlPointWorld(*negative_ras)
        nested.append(len(logic.session.clicks))

    logic.logCallback = during_the_step
    logic.addClick(positive_ras, positive=True)
    assert nested == [1]  # the nested point did not run inside the first click
    assert [c.positive for c in logic.session.clicks] == [True, False]  # ... but right after it
    assert busy[:2] == [True, False] and not logic.busy
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())


# ------------------------------------------------------------------ item 7
def planar_contour_segmentation(scene, ct):
    """A segmentation as SlicerRT imports a DICOM RTSTRUCT: planar contours as the source."""
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "RTSTRUCT")
    seg.GetSegmentation().SetSourceRepresentationName("Planar contour")
    segment = slicer.vtkSegment()
    segment.SetName("Body")
    segment.AddRepresentation("Planar contour", vtk.vtkPolyData())
    seg.GetSegmentation().AddSegment(segment)
    return seg


def test_an_rtstruct_target_is_refused_before_anything_changes(logic, module, sts_nodes, tiny_package_dir,
                                                                scene):
    ct, pet, truth = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, _ = pick_clicks(module, logic, sts_nodes)
    logic.addClick(positive_ras, positive=True)
    session, old_seg = logic.session, segmentation_node(logic)
    rtstruct = planar_contour_segmentation(scene, ct)
    for convert in (False, True):  # converting needs SlicerRT's rules: absent here, so refused too
        with pytest.raises(ValueError, match="Planar contour|cannot be converted"):
            logic.segment(ct, pet, rtstruct, None, modelPath=str(tiny_package_dir), device="cpu",
                          convertSegmentation=convert)
        assert rtstruct.GetSegmentation().GetNumberOfSegments() == 1  # no empty GTVp added
        assert rtstruct.GetSegmentation().GetSourceRepresentationName() == "Planar contour"
        assert logic.session is session and segmentation_node(logic) is old_seg
        assert logic.getClickNodes()[0].GetNumberOfControlPoints() == 1  # click points kept


# ------------------------------------------------------------------ item 9
def test_an_engine_warning_reaches_the_user(logic, module, sts_nodes, tiny_package_dir, monkeypatch):
    from InteractiveRefineLib import session as session_module

    original = session_module.RefinementSession.initial

    def initial_with_warning(self):
        logging.getLogger("InteractiveRefineLib.inputs.image").warning("the PET covers only 40% of the ROI")
        return original(self)

    monkeypatch.setattr(session_module.RefinementSession, "initial", initial_with_warning)
    shown = []
    logic.warningCallback = shown.append
    segment_sts(logic, sts_nodes, tiny_package_dir)
    assert shown == ["the PET covers only 40% of the ROI"] and logic.warnings == shown


def test_an_edit_in_segment_editor_is_not_overwritten_silently(logic, module, sts_nodes, tiny_package_dir):
    ct, _, _ = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    shown = []
    logic.warningCallback = shown.append
    logic.addClick(positive_ras, positive=True)
    assert shown == []  # the module's own writes are not edits
    seg = segmentation_node(logic)
    edited = logic.segmentMask().copy()
    edited[tuple(module.InteractiveRefineTest.worldToCtIndex(ct, negative_ras))] = 1
    segment_id = seg.GetSegmentation().GetSegmentIdBySegmentName("GTVp")
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, seg, segment_id, ct)  # as Segment Editor does
    logic.addClick(negative_ras, positive=False)
    assert len(shown) == 1 and "edited outside InteractiveRefine" in shown[0]


# ------------------------------------------------------- item 9: cancel
def test_cancel_stops_segment_and_changes_nothing(logic, sts_nodes, tiny_package_dir, scene, monkeypatch):
    """The Widget passes processEvents as ``idleCallback``: Segment runs on a thread, the main thread
    keeps the GUI alive, and Cancel (here pressed at the first idle call) stops it."""
    import time

    from InteractiveRefineLib import session as session_module

    original = session_module.RefinementSession.initial

    def slow_initial(self):
        time.sleep(0.3)  # a large model: Cancel comes before the network's layers run
        return original(self)

    monkeypatch.setattr(session_module.RefinementSession, "initial", slow_initial)
    idle = []
    logic.idleCallback = lambda: (idle.append(1), logic.cancel())
    ct, pet, _ = sts_nodes
    with pytest.raises(ValueError, match="Cancelled"):
        logic.segment(ct, pet, None, None, modelPath=str(tiny_package_dir), device="cpu")
    assert idle and logic.session is None and not logic.busy
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    logic.idleCallback = lambda: idle.append(2)  # no Cancel: the same Segment runs to its end on the thread
    logic.segment(ct, pet, None, None, modelPath=str(tiny_package_dir), device="cpu")
    assert logic.session is not None
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())


def test_without_an_roi_node_the_box_is_placed_automatically_and_the_log_says_so(logic, sts_nodes,
                                                                                  tiny_package_dir):
    """No ROI node: the engine places the box (InteractiveRefineLib.auto_roi) and the status log
    names the method and centre; an ROI node's centre wins."""
    ct, pet, _ = sts_nodes
    messages = []
    logic.logCallback = messages.append
    logic.segment(ct, pet, None, None, modelPath=str(tiny_package_dir), device="cpu")
    said = [m for m in messages if m.startswith("ROI: automatic")]
    assert len(said) == 1 and "centred on the body" in said[0]  # a thigh: no brain on this PET
    assert logic.session.roi_placement.method == "body"
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    centre = logic.session.grid.center_ras() + np.array([6.0, -4.0, 3.0])
    roi.SetCenter(*centre)
    roi.SetSize(60.0, 60.0, 60.0)
    messages.clear()
    logic.segment(ct, pet, None, roi, modelPath=str(tiny_package_dir), device="cpu")
    assert not [m for m in messages if m.startswith("ROI:")]
    assert logic.session.roi_placement.method == "explicit"
    np.testing.assert_allclose(logic.session.roi_placement.center_ras, centre, atol=1e-3)
