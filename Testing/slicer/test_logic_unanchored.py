"""In Slicer (real MRML through slicer-core): with a model whose card has an ``unanchored`` stage
and no ROI node (the ROI placed automatically), a "not tumour" point placed before any "tumour"
point is answered by that stage and the status line says so; the first "tumour" point hands the
clicks to the refine members; with the user's ROI every point goes to them. The tiny package's
members show which stage answered: nothing is tumour (unanchored) or everything is (refine)."""
from __future__ import annotations

import numpy as np

from conftest import unanchored_package


def test_not_tumour_points_before_a_tumour_point_at_the_automatic_roi(logic, sts_nodes, scene, tmp_path):
    ct, pet, _ = sts_nodes
    package = unanchored_package(tmp_path)
    logic.segment(ct, pet, None, None, modelPath=str(package), device="cpu")
    assert not logic.session.roi_placement.given
    centre = np.asarray(logic.session.roi_placement.center_ras)
    positive_node, negative_node = logic.getClickNodes()
    negative_node.AddControlPointWorld(*centre)
    assert "hot regions rejected (no tumour point yet)" in logic.lastStatus
    assert logic.segmentMask().sum() == 0
    positive_node.AddControlPointWorld(*(centre + 4.0))
    assert "rejected" not in logic.lastStatus and logic.segmentMask().sum() > 0
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())

    logic.clear()
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    roi.SetCenter(*[float(v) for v in centre])
    roi.SetSize(90.0, 90.0, 90.0)
    logic.segment(ct, pet, None, roi, modelPath=str(package), device="cpu")
    assert logic.session.roi_placement.given
    logic.getClickNodes()[1].AddControlPointWorld(*centre)
    assert "rejected" not in logic.lastStatus and logic.segmentMask().sum() > 0
