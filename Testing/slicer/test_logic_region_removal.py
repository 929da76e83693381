"""In Slicer (real MRML through slicer-core), with the shipped default model on the real
head-and-neck case CHGJ015: a "not tumour" point on the hot brain, then a "tumour" point on
the tumour, and the whole brain region leaves the GTVp segment; the status line says so; the
module's setting turns it off for the next clicks."""
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


def _network_only_default_model(folder):
    """A copy of the shipped model whose card does not start from the threshold region, so that
    every point is answered by the networks and region removal (what this test is about)."""
    import json
    import shutil

    from InteractiveRefineLib.model_package import DEFAULT_MODEL_DIR

    copy = shutil.copytree(DEFAULT_MODEL_DIR, folder / "default_network_only")
    card = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**card, "threshold_start": False}))
    return str(copy)


def test_not_tumour_point_on_a_separate_region_removes_it_from_the_segment(scene, tmp_path):
    load = InteractiveRefine.InteractiveRefineLogic.loadVolume
    ct = load(str(data_path(*CHGJ, "CHGJ015_ct.nii.gz")), "CT")
    pet = load(str(data_path(*CHGJ, "CHGJ015_pt.nii.gz")), "PET")
    label = load(str(data_path(*CHGJ, "CHGJ015_ct_gtvt.nii.gz")), "label")
    truth = slicer.util.arrayFromVolume(label) > 0
    scene.RemoveNode(label)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    centre = (_ijk_to_ras(ct) @ np.append(np.argwhere(truth).mean(axis=0)[::-1], 1.0))[:3]
    roi.SetCenter(*[float(v) for v in centre])
    roi.SetSize(100.0, 100.0, 100.0)  # within the default model's 144 mm field

    logic = InteractiveRefine.InteractiveRefineLogic()
    try:
        assert logic.params.regionRemoval  # on by default
        logic.segment(ct, pet, None, roi, modelPath=_network_only_default_model(tmp_path), device="cpu")
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
        np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())

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
