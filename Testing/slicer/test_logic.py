"""InteractiveRefineLogic on real MRML (slicer-core) with the real STS_001 PET/CT.

The network is the tiny random one (``tiny_package_dir``): it does not follow clicks
semantically, so these tests assert what the pipeline guarantees: the segment is rewritten
after every defined point and equals the session's mask bit for bit, on the CT's geometry;
undo/reset/replay restore exact states; transforms, previews, bad input and other segments
are handled.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk

ROI_SIZE_MM = 30.0  # smaller than the tiny model's 48 mm ROI: the working grid is exactly 48^3


# ------------------------------------------------------------------ helpers
def ct_world_matrix(logic, ct_node) -> np.ndarray:
    ijk_to_ras = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(ijk_to_ras)
    return logic.transformToWorld(ct_node) @ slicer.util.arrayFromVTKMatrix(ijk_to_ras)


def tumour_edge_ras(ct_node, truth) -> np.ndarray:
    """Local RAS of the tumour voxel with the largest i (an ROI centred there holds both classes)."""
    index = np.argwhere(truth)
    edge = index[np.argmax(index[:, 2])]
    ijk_to_ras = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(ijk_to_ras)
    return (slicer.util.arrayFromVTKMatrix(ijk_to_ras) @ np.append(edge[::-1], 1.0))[:3]


def add_roi(center_ras, size_mm=ROI_SIZE_MM, parent=None):
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    roi.SetCenter(*[float(v) for v in center_ras])
    roi.SetSize(size_mm, size_mm, size_mm)
    if parent is not None:
        roi.SetAndObserveTransformNodeID(parent.GetID())
    return roi


def segment_sts(logic, sts_nodes, package_dir, segmentation=None, transform=None):
    """Segment STS_001 with the tiny model and an ROI on the tumour border; return the ROI."""
    ct, pet, truth = sts_nodes
    roi = add_roi(tumour_edge_ras(ct, truth), parent=transform)
    logic.segment(ct, pet, segmentation, roi, modelPath=str(package_dir), device="cpu")
    return roi


def segmentation_node(logic):
    return logic.getParameterNode().GetNodeReference("segmentation")


def mask_to_world_points(matrix, mask) -> np.ndarray:
    kji = np.argwhere(mask)
    return (np.c_[kji[:, ::-1], np.ones(len(kji))] @ matrix.T)[:, :3]


def pick_clicks(module, logic, sts_nodes):
    ct, _, truth = sts_nodes
    positive, negative = module.InteractiveRefineTest.pickClicks(logic, ct, truth)
    assert positive is not None and negative is not None
    return positive, negative


def internal_labelmap_world(segmentation, segment_id) -> tuple[np.ndarray, np.ndarray]:
    """(image-to-world matrix incl. the node's parent transform, mask [k, j, i]) of a segment as stored."""
    image = segmentation.GetBinaryLabelmapInternalRepresentation(segment_id)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    image_to_local = slicer.util.arrayFromVTKMatrix(matrix)
    extent = image.GetExtent()
    from vtk.util import numpy_support

    dims = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    label_value = segmentation.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    offset = np.eye(4)
    offset[:3, 3] = [extent[0], extent[2], extent[4]]
    parent = np.eye(4)
    if segmentation.GetParentTransformNode() is not None:
        parent_matrix = vtk.vtkMatrix4x4()
        segmentation.GetParentTransformNode().GetMatrixTransformToWorld(parent_matrix)
        parent = slicer.util.arrayFromVTKMatrix(parent_matrix)
    return parent @ image_to_local @ offset, array == label_value


def dice(a, b) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


# -------------------------------------------------------------------- tests
def test_segment_writes_gtvp_on_ct_geometry(logic, sts_nodes, tiny_package_dir):
    ct, _, _ = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    seg = segmentation_node(logic)
    segment_id = seg.GetSegmentation().GetSegmentIdBySegmentName("GTVp")
    assert segment_id
    segment = seg.GetSegmentation().GetSegment(segment_id)
    assert segment.GetColor() == pytest.approx((0.95, 0.65, 0.10))
    mask = logic.segmentMask()
    assert mask.shape == slicer.util.arrayFromVolume(ct).shape
    np.testing.assert_array_equal(mask, logic.session.mask_on_ct())
    assert 0 < mask.sum() < mask.size

    # Geometry: reference geometry is the CT's and the stored labelmap lies on the CT's voxel grid.
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()).GetID() == ct.GetID()
    stored_to_world, stored = internal_labelmap_world(seg, segment_id)
    ct_matrix = ct_world_matrix(logic, ct)
    offset = np.linalg.inv(ct_matrix) @ stored_to_world  # stored voxel -> CT voxel
    np.testing.assert_allclose(offset[:3, :3], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(offset[:3, 3], np.rint(offset[:3, 3]), atol=1e-6)
    assert stored.sum() == mask.sum()
    assert logic.lastStatus.startswith("0 click(s)") and "device cpu" in logic.lastStatus


def test_points_refine_segment(logic, module, sts_nodes, tiny_package_dir):
    ct, _, _ = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    positive_node, negative_node = logic.getClickNodes()
    ct_matrix = ct_world_matrix(logic, ct)
    before = logic.segmentMask()
    for step, (node, ras) in enumerate(((positive_node, positive_ras), (negative_node, negative_ras)), 1):
        node.AddControlPointWorld(*ras)  # what placing a point in a view does
        after = logic.segmentMask()
        assert len(logic.session.clicks) == step
        assert logic.session.clicks[-1].positive == (node is positive_node)
        np.testing.assert_allclose(logic.session.clicks[-1].ras, ras)
        assert len(logic.clickTimings) == step and logic.clickTimings[-1]["total_s"] > 0
        assert "write_s" in logic.clickTimings[-1]
        # The segment is the session's mask, bit for bit, and so is its value at the click.
        np.testing.assert_array_equal(after, logic.session.mask_on_ct())
        index = tuple(module.InteractiveRefineTest.worldToCtIndex(ct, ras))
        assert after[index] == logic.session.mask_on_ct()[index]
        # The refinement changed the segment near the click (within 5 mm).
        changed = mask_to_world_points(ct_matrix, after != before)
        assert len(changed) and np.linalg.norm(changed - ras, axis=1).min() < 5.0
        before = after
    assert positive_node.GetNthControlPointLabel(0) == "+1"
    assert negative_node.GetNthControlPointLabel(0) == "-2"
    assert logic.getParameterNode().GetParameter("clickOrder") == "+1;-1"


def test_preview_point_triggers_nothing(logic, module, sts_nodes, tiny_package_dir):
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, _ = pick_clicks(module, logic, sts_nodes)
    positive_node, _ = logic.getClickNodes()
    before = logic.segmentMask()
    # The place widget's preview point: PointAdded/PointModified (here batched, so even a
    # PointPositionDefined event without index arrives) while the point is only a preview.
    was_modifying = positive_node.StartModify()
    index = positive_node.AddControlPointWorld(*positive_ras)
    positive_node.SetNthControlPointPosition(index, *positive_ras, positive_node.PositionPreview)
    positive_node.EndModify(was_modifying)
    assert positive_node.GetNthControlPointPositionStatus(index) == positive_node.PositionPreview
    assert logic.session.clicks == ()
    assert logic.clickTimings == []
    np.testing.assert_array_equal(logic.segmentMask(), before)
    # The click itself: PointModified, then PointPositionDefined -> one refinement.
    positive_node.SetNthControlPointPosition(index, *positive_ras)
    assert len(logic.session.clicks) == 1
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())


def test_undo_and_reset_restore_exactly(logic, module, sts_nodes, tiny_package_dir):
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    positive_node, negative_node = logic.getClickNodes()
    initial = logic.segmentMask()
    logic.addClick(positive_ras, positive=True)
    after_one = logic.segmentMask()
    logic.addClick(negative_ras, positive=False)
    assert not np.array_equal(logic.segmentMask(), after_one)

    logic.undo()
    np.testing.assert_array_equal(logic.segmentMask(), after_one)
    assert negative_node.GetNumberOfControlPoints() == 0
    assert positive_node.GetNumberOfControlPoints() == 1
    logic.undo()
    np.testing.assert_array_equal(logic.segmentMask(), initial)
    assert positive_node.GetNumberOfControlPoints() == 0
    with pytest.raises(ValueError, match="no click to undo"):
        logic.undo()

    logic.addClick(positive_ras, positive=True)
    logic.addClick(negative_ras, positive=False)
    logic.reset()
    np.testing.assert_array_equal(logic.segmentMask(), initial)
    assert positive_node.GetNumberOfControlPoints() == 0 and negative_node.GetNumberOfControlPoints() == 0
    assert logic.getParameterNode().GetParameter("clickOrder") == ""


def test_point_deleted_in_markups_is_undone(logic, module, sts_nodes, tiny_package_dir):
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    logic.addClick(positive_ras, positive=True)
    after_one = logic.segmentMask()
    _, negative_node = logic.getClickNodes()
    negative_node.AddControlPointWorld(*negative_ras)
    assert len(logic.session.clicks) == 2
    negative_node.RemoveNthControlPoint(0)  # e.g. deleted in the Markups module
    assert len(logic.session.clicks) == 1
    np.testing.assert_array_equal(logic.segmentMask(), after_one)


def test_auto_refine_off_keeps_points_pending(logic, module, sts_nodes, tiny_package_dir):
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    initial = logic.segmentMask()
    logic.setAutoRefine(False)
    positive_node, negative_node = logic.getClickNodes()
    negative_node.AddControlPointWorld(*negative_ras)
    positive_node.AddControlPointWorld(*positive_ras)
    assert logic.session.clicks == ()
    np.testing.assert_array_equal(logic.segmentMask(), initial)
    logic.refinePendingClicks()
    assert [c.positive for c in logic.session.clicks] == [False, True]  # placement order
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())


def test_other_segments_untouched(logic, module, sts_nodes, tiny_package_dir, scene):
    ct, _, truth = sts_nodes
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    other_ids = []
    for name, mask in (("Other tumour", truth), ("Box", np.zeros(truth.shape, bool))):
        if name == "Box":
            mask[20:40, 80:140, 120:170] = True  # overlaps the ROI
        segment_id = seg.GetSegmentation().AddEmptySegment("", name, (0.2, 0.4, 0.9))
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), seg, segment_id, ct)
        other_ids.append(segment_id)
    before = {i: slicer.util.arrayFromSegmentBinaryLabelmap(seg, i, ct) for i in other_ids}

    segment_sts(logic, sts_nodes, tiny_package_dir, segmentation=seg)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    logic.addClick(positive_ras, positive=True)
    logic.addClick(negative_ras, positive=False)
    logic.undo()
    assert segmentation_node(logic).GetID() == seg.GetID()
    assert seg.GetSegmentation().GetNumberOfSegments() == 3
    for segment_id in other_ids:
        np.testing.assert_array_equal(
            slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, ct), before[segment_id]
        )
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())


def test_parent_transform_moves_result(logic, module, sts_nodes, tiny_package_dir, scene):
    ct, pet, truth = sts_nodes
    # Reference run without a transform.
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, _ = pick_clicks(module, logic, sts_nodes)
    logic.addClick(positive_ras, positive=True)
    reference_mask = logic.segmentMask()
    reference_world = mask_to_world_points(ct_world_matrix(logic, ct), reference_mask).mean(axis=0)

    # The same study under a rigid transform: 20 mm translation and a 20 degree rotation.
    angle = np.deg2rad(20.0)
    matrix = np.eye(4)
    matrix[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    matrix[:3, 3] = (20.0, -5.0, 10.0)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    for node in (ct, pet):
        node.SetAndObserveTransformNodeID(transform.GetID())
    logic.clear()  # one active Logic per scene: they share the module's parameter node
    moved_logic = module.InteractiveRefineLogic()
    segment_sts(moved_logic, sts_nodes, tiny_package_dir, transform=transform)
    seg = segmentation_node(moved_logic)
    assert seg.GetTransformNodeID() == transform.GetID()
    moved_click = (matrix @ np.append(positive_ras, 1.0))[:3]  # the same anatomy, in world RAS
    moved_logic.addClick(moved_click, positive=True)

    moved_mask = moved_logic.segmentMask()  # on the CT's voxel grid
    np.testing.assert_array_equal(moved_mask, moved_logic.session.mask_on_ct())
    assert dice(moved_mask, reference_mask) > 0.99
    segment_id = seg.GetSegmentation().GetSegmentIdBySegmentName("GTVp")
    stored_to_world, stored = internal_labelmap_world(seg, segment_id)
    moved_world = mask_to_world_points(stored_to_world, stored).mean(axis=0)
    np.testing.assert_allclose(moved_world, (matrix @ np.append(reference_world, 1.0))[:3], atol=0.5)
    moved_logic.clear()


def test_moving_the_ct_after_segment_is_refused(logic, module, sts_nodes, tiny_package_dir, scene):
    ct, pet, _ = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, _ = pick_clicks(module, logic, sts_nodes)
    before = logic.segmentMask()
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    ct.SetAndObserveTransformNodeID(transform.GetID())
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shifted))
    with pytest.raises(ValueError, match="moved"):
        logic.addClick(positive_ras, positive=True)
    assert logic.getClickNodes()[0].GetNumberOfControlPoints() == 0
    ct.SetAndObserveTransformNodeID(None)
    np.testing.assert_array_equal(logic.segmentMask(), before)


def test_saved_scene_replays_to_same_mask(logic, module, sts_nodes, tiny_package_dir, tmp_path):
    import slicer_bootstrap

    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    logic.addClick(positive_ras, positive=True)
    logic.addClick(negative_ras, positive=False)
    logic.addClick(positive_ras + np.array([0.0, 3.0, 0.0]), positive=True)
    expected = logic.segmentMask()
    order = logic.getParameterNode().GetParameter("clickOrder")
    assert order == "+1;-1;+2"
    mrml = slicer_bootstrap.save_scene(tmp_path / "scene")
    logic.clear()

    slicer_bootstrap.load_scene(mrml)
    reloaded = module.InteractiveRefineLogic()
    assert reloaded.getParameterNode().GetParameter("clickOrder") == order
    np.testing.assert_array_equal(reloaded.segmentMask(), expected)  # the saved .seg.nrrd
    reloaded.replayClicks()
    assert [c.positive for c in reloaded.session.clicks] == [True, False, True]
    np.testing.assert_array_equal(reloaded.segmentMask(), expected)
    np.testing.assert_array_equal(reloaded.session.mask_on_ct(), expected)
    reloaded.undo()  # the reloaded clicks are live again
    assert len(reloaded.session.clicks) == 2
    reloaded.clear()


# ---------------------------------------------------------------- bad input
def test_no_ct_selected(logic, sts_nodes, tiny_package_dir):
    _, pet, _ = sts_nodes
    with pytest.raises(ValueError, match="No CT volume selected"):
        logic.segment(None, pet, None, modelPath=str(tiny_package_dir))
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_pet_not_overlapping_ct(logic, sts_nodes, tiny_package_dir, scene):
    ct, pet, _ = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    before = logic.segmentMask()
    far = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "far")
    shifted = np.eye(4)
    shifted[2, 3] = 1000.0
    far.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shifted))
    pet.SetAndObserveTransformNodeID(far.GetID())
    with pytest.raises(ValueError, match="PET does not overlap"):
        logic.segment(ct, pet, segmentation_node(logic), modelPath=str(tiny_package_dir), device="cpu")
    np.testing.assert_array_equal(logic.segmentMask(), before)


def test_click_outside_roi(logic, module, sts_nodes, tiny_package_dir):
    ct, _, truth = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    before = logic.segmentMask()
    positive_node, _ = logic.getClickNodes()
    outside_roi = tumour_edge_ras(ct, truth) + np.array([0.0, 0.0, 60.0])  # inside the CT
    with pytest.raises(ValueError, match="outside the region of interest"):
        logic.addClick(outside_roi, positive=True)
    assert positive_node.GetNumberOfControlPoints() == 0
    assert logic.getParameterNode().GetParameter("clickOrder") == ""
    np.testing.assert_array_equal(logic.segmentMask(), before)

    # The same through a point placed in a view: reported to the error callback, point removed.
    messages = []
    logic.errorCallback = messages.append
    positive_node.AddControlPointWorld(*outside_roi)
    assert len(messages) == 1 and "outside the region of interest" in messages[0]
    assert positive_node.GetNumberOfControlPoints() == 0
    np.testing.assert_array_equal(logic.segmentMask(), before)


def test_click_before_segment(logic):
    with pytest.raises(ValueError, match="press Segment first"):
        logic.addClick((0.0, 0.0, 0.0), positive=True)


def test_scheduler_defers_refinement_and_reports_errors(logic, module, sts_nodes, tiny_package_dir):
    ct, _, truth = sts_nodes
    segment_sts(logic, sts_nodes, tiny_package_dir)
    positive_ras, _ = pick_clicks(module, logic, sts_nodes)
    queued, messages = [], []
    logic.scheduler = queued.append  # the Widget passes a zero-delay Qt timer
    logic.errorCallback = messages.append
    positive_node, _ = logic.getClickNodes()
    positive_node.AddControlPointWorld(*positive_ras)
    assert len(queued) == 1 and logic.session.clicks == ()  # nothing ran inside the markups event
    queued.pop()()
    assert len(logic.session.clicks) == 1
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())
    positive_node.AddControlPointWorld(*(tumour_edge_ras(ct, truth) + np.array([0.0, 0.0, 60.0])))
    queued.pop()()
    assert len(messages) == 1 and "outside the region of interest" in messages[0]
    assert positive_node.GetNumberOfControlPoints() == 1


def test_roi_not_placed(logic, sts_nodes, tiny_package_dir, scene):
    ct, pet, _ = sts_nodes
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "empty ROI")
    with pytest.raises(ValueError, match="not placed yet"):
        logic.segment(ct, pet, None, roi, modelPath=str(tiny_package_dir), device="cpu")
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_the_status_names_a_windowed_click_and_reduced_precision(
        logic, module, sts_nodes, tmp_path, monkeypatch):
    """A model with a ROI above 96^3 on the CPU: with a whole-ROI pass too slow for a click (here
    forced), the module's session refines in a window, in bfloat16 where the CPU has it, and the
    status line says both."""
    from InteractiveRefineLib import policy
    from InteractiveRefineLib.backend import cpu_bfloat16_supported
    from InteractiveRefineLib.model_package import create_random_model_package

    from conftest import TINY_NETWORK

    package = create_random_model_package(tmp_path / "tiny100", network=TINY_NETWORK,
                                          roi_size_vox=(100, 100, 100), seed=0)
    monkeypatch.setattr(policy, "AUTO_FULL_SECONDS", 0.0)
    logic.setExactFollowUp(False)  # the preview stays
    segment_sts(logic, sts_nodes, package)
    assert logic.session.refine_mode == "fast"
    positive_ras, _ = pick_clicks(module, logic, sts_nodes)
    logic.addClick(positive_ras, positive=True)
    assert logic.lastResult.window is not None and not logic.lastResult.exact
    assert "window" in logic.lastStatus and "1 click(s)" in logic.lastStatus
    assert logic.lastStatus.endswith(", preview")
    bfloat16 = cpu_bfloat16_supported()
    assert logic.session.amp is bfloat16 and ("(bfloat16)" in logic.lastStatus) is bfloat16
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())
    # Turning the exact follow-up on replaces the preview with the float32 whole-ROI mask now
    # (no scheduler: at once), in the segment too.
    logic.setExactFollowUp(True)
    assert logic.lastResult.exact and logic.lastResult.window is None and logic.lastResult.n_clicks == 1
    assert "exact mask" in logic.lastStatus and "preview" not in logic.lastStatus
    assert "(bfloat16)" not in logic.lastStatus
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())
    assert len(logic.session.clicks) == 1 and logic.getClickNodes()[0].GetNumberOfControlPoints() == 1


def test_the_exact_mask_replaces_the_preview_in_the_background(
        logic, module, sts_nodes, tmp_path, monkeypatch):
    """With the Widget's scheduler, a preview click starts the exact pass in a background thread;
    the next click cancels it; applyConfirmed() writes the exact mask: the float32 whole-ROI
    refinement of the same clicks."""
    from InteractiveRefineLib import policy
    from InteractiveRefineLib import session as session_module
    from InteractiveRefineLib.model_package import create_random_model_package, load_model_package

    from conftest import TINY_NETWORK

    package = create_random_model_package(tmp_path / "tiny100", network=TINY_NETWORK,
                                          roi_size_vox=(100, 100, 100), seed=0)
    monkeypatch.setattr(policy, "AUTO_FULL_SECONDS", 0.0)  # windows: previews
    segment_sts(logic, sts_nodes, package)
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    queued, started = [], []
    logic.scheduler = queued.append
    logic.confirmStartedCallback = lambda: started.append(logic.session.step)
    positive_node, negative_node = logic.getClickNodes()
    positive_node.AddControlPointWorld(*positive_ras)
    queued.pop()()
    assert started == [1] and not logic.lastResult.exact and "exact mask follows" in logic.lastStatus
    negative_node.AddControlPointWorld(*negative_ras)  # while the first exact pass may still run
    queued.pop()()
    assert started == [1, 2] and len(logic.session.clicks) == 2
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())  # the preview
    logic.waitForExactMask()
    assert logic.applyConfirmed() and not logic.confirmRunning
    assert logic.lastResult.exact and logic.lastResult.n_clicks == 2 and "exact mask" in logic.lastStatus
    assert not logic.applyConfirmed()  # written once
    reference = session_module.RefinementSession(load_model_package(package), device="cpu",
                                                 refine_mode="full", amp=False)
    ct, pet, _ = sts_nodes
    reference.set_image(logic.volumeFromNode(ct), logic.volumeFromNode(pet, "PET"),
                        roi_center_ras=logic.session.grid.center_ras(), roi_size_vox=logic.session.grid.shape)
    reference.initial()
    for click in logic.session.clicks:
        reference.add_click(click.ras, click.positive)
    np.testing.assert_array_equal(logic.segmentMask(), reference.mask_on_ct())
    # Undo goes back to the exact state of one click; nothing more to compute.
    logic.undo()
    assert logic.lastResult.exact and not logic.confirmRunning
