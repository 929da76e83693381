"""In Slicer (real MRML through slicer-core), with the shipped default model on the real
head-and-neck case CHGJ015 and an ROI node where the automatic box goes: a "not tumour" point on
hot tissue away from the tumour, then a "tumour" point on the tumour, and that whole region leaves
the GTVp segment; the status line says so; the module's setting turns it off for the next clicks.
The threshold-start check box applies a card's threshold start, live."""
from __future__ import annotations

import numpy as np
import slicer
import vtk
from scipy import ndimage

from conftest import InteractiveRefine, data_path

CHGJ = ("hecktor2020_chgj015",)


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _deepest_ras(node, region) -> np.ndarray:
    """RAS of the voxel of ``region`` (on ``node``'s grid) farthest from its border."""
    distance = ndimage.distance_transform_edt(region)
    kji = np.unravel_index(int(np.argmax(distance)), region.shape)
    return (_ijk_to_ras(node) @ np.array([kji[2], kji[1], kji[0], 1.0]))[:3]


def _chgj015(scene):
    """CHGJ015's CT and PET volume nodes, and its GTVp as a boolean array (the label node removed)."""
    load = InteractiveRefine.InteractiveRefineLogic.loadVolume
    ct = load(str(data_path(*CHGJ, "CHGJ015_ct.nii.gz")), "CT")
    pet = load(str(data_path(*CHGJ, "CHGJ015_pt.nii.gz")), "PET")
    label = load(str(data_path(*CHGJ, "CHGJ015_ct_gtvt.nii.gz")), "label")
    truth = slicer.util.arrayFromVolume(label) > 0
    scene.RemoveNode(label)
    return ct, pet, truth


def test_not_tumour_point_on_a_separate_region_removes_it_from_the_segment(scene):
    ct, pet, truth = _chgj015(scene)
    logic = InteractiveRefine.InteractiveRefineLogic()
    try:
        logic.segment(ct, pet, None, None, modelPath="", device="cpu")  # where the automatic box goes
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
        roi.SetCenter(*[float(v) for v in logic.session.roi_placement.center_ras])
        roi.SetSize(140.0, 140.0, 140.0)  # within the default model's 144 mm field
        assert logic.params.regionRemoval  # on by default
        logic.segment(ct, pet, None, roi, modelPath="", device="cpu")
        assert logic.session.roi_placement.given and logic.session.threshold_start is False
        initial = logic.segmentMask().astype(bool)
        labels, count = ndimage.label(initial, structure=np.ones((3, 3, 3)))
        regions = sorted((labels == n for n in range(1, count + 1)), key=lambda r: -int(r.sum()))
        brain = next(r for r in regions if not (r & truth).any())  # the largest false region
        assert brain.sum() > truth.sum()
        positive_node, negative_node = logic.getClickNodes()
        negative_node.AddControlPointWorld(*_deepest_ras(ct, brain))
        assert logic.segmentMask()[brain].sum() > 0  # the model alone keeps part of it
        positive_node.AddControlPointWorld(*_deepest_ras(ct, truth))
        mask = logic.segmentMask().astype(bool)
        # All of it (on the CT grid, a few voxels of a neighbouring working-grid region may stay).
        assert mask[brain].sum() < 0.01 * brain.sum()
        assert (mask & truth).sum() > 0.5 * truth.sum()
        assert "removed" in logic.lastStatus and "mL marked not tumour" in logic.lastStatus
        assert "kept a region" not in logic.lastStatus
        np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())
        # A "not tumour" point on the tumour, then a "tumour" point there: the region stays, and
        # the status line says why the "not tumour" mark did not take it away.
        negative_node.AddControlPointWorld(*_deepest_ras(ct, truth))
        positive_node.AddControlPointWorld(*_deepest_ras(ct, truth))
        assert "kept a region marked not tumour (this tumour point is on or beside it)" in logic.lastStatus
        assert (logic.segmentMask().astype(bool) & truth).sum() > 0.5 * truth.sum()
        logic.undo()
        logic.undo()
        np.testing.assert_array_equal(logic.segmentMask().astype(bool), mask)

        # Switched off, the same two points leave part of the brain in the segment.
        logic.setRegionRemoval(False)
        assert logic.getParameterNode().GetParameter("regionRemoval") == "False"
        logic.reset()
        negative_node, positive_node = logic.getClickNodes()[1], logic.getClickNodes()[0]
        negative_node.AddControlPointWorld(*_deepest_ras(ct, brain))
        positive_node.AddControlPointWorld(*_deepest_ras(ct, truth))
        assert len(logic.session.clicks) == 2
        assert logic.segmentMask()[brain].sum() > mask[brain].sum()
        assert "removed" not in logic.lastStatus
    finally:
        logic.clear()


def test_the_first_tumour_point_starts_from_the_threshold_region_unless_switched_off(scene, tmp_path):
    """A model whose card asks for a threshold start (the default's networks, the card changed):
    the first "tumour" point adds its 40 % SUVmax region; the module's check box
    (``setThresholdStart``) turns that off, live too. The default card refines that point."""
    import json
    import shutil

    from InteractiveRefineLib.model_package import DEFAULT_MODEL_DIR

    package = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "threshold_start")
    card = json.loads((package / "model.json").read_text())
    card["threshold_start"] = True  # the card is not covered by the weights' checksums
    (package / "model.json").write_text(json.dumps(card))
    ct, pet, truth = _chgj015(scene)
    logic = InteractiveRefine.InteractiveRefineLogic()
    try:
        assert logic.thresholdStartAvailable  # no session yet: the check box is live
        logic.segment(ct, pet, None, None, modelPath="", device="cpu")
        assert not logic.thresholdStartAvailable  # the default card refines the first point: greyed out
        logic.getClickNodes()[0].AddControlPointWorld(*_deepest_ras(ct, truth))
        assert [click.kind for click in logic.session.clicks] == ["point"]
        logic.clear()
        assert logic.params.thresholdStart  # on by default: as the card says
        logic.segment(ct, pet, None, None, modelPath=str(package), device="cpu")
        assert logic.thresholdStartAvailable
        positive_node = logic.getClickNodes()[0]
        positive_node.AddControlPointWorld(*_deepest_ras(ct, truth))
        assert [click.kind for click in logic.session.clicks] == ["threshold"]
        logic.setThresholdStart(False)
        assert logic.getParameterNode().GetParameter("thresholdStart") == "False"
        logic.reset()
        positive_node.AddControlPointWorld(*_deepest_ras(ct, truth))
        assert [click.kind for click in logic.session.clicks] == ["point"]
    finally:
        logic.clear()
