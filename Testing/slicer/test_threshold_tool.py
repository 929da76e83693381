"""The PET threshold tool in the Slicer module (third point list, in the click order
with the other clicks: undo, reset, replay), on real MRML with STS_001 and the tiny network."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from test_logic import pick_clicks, segment_sts


def hottest_tumour_ras(logic, sts_nodes):
    """World RAS of the hottest PET voxel among the tumour voxels inside the session's ROI."""
    ct, pet, truth = sts_nodes
    from InteractiveRefineSlicerLib import volumes

    grid = logic.session.grid
    kji = np.argwhere(truth)
    ras = (np.c_[kji[:, ::-1], np.ones(len(kji))] @ volumes.ijkToWorld(ct).T)[:, :3]
    inside = np.all(np.abs(grid.ras_to_index(ras)[:, ::-1] - (np.array(grid.shape) - 1) / 2)
                    < np.array(grid.shape) / 2 - 3, axis=1)
    ras = ras[inside]
    pet_index = volumes.worldToIndex(pet, ras)
    values = slicer.util.arrayFromVolume(pet)[tuple(pet_index.T)]
    return ras[np.argmax(values)]


def test_a_threshold_point_replaces_the_mask_and_is_a_click_like_the_others(logic, module, sts_nodes,
                                                                           tiny_package_dir, tmp_path):
    import slicer_bootstrap

    segment_sts(logic, sts_nodes, tiny_package_dir)
    assert logic.params.thresholdPercent == 40
    hot = hottest_tumour_ras(logic, sts_nodes)
    _, negative_ras = pick_clicks(module, logic, sts_nodes)
    initial = logic.segmentMask()
    result = logic.addThreshold(hot)
    assert result.mode == "threshold"
    details = result.details["threshold"]
    assert details["fraction"] == pytest.approx(0.4)
    assert f"40 % SUVmax region, SUVmax {details['suvmax']:.1f}" in logic.lastStatus
    threshold_node = logic.getThresholdNode()
    assert threshold_node.GetNumberOfControlPoints() == 1
    assert threshold_node.GetNthControlPointDescription(0) == "fraction=0.4"
    click = logic.session.clicks[-1]
    assert click.kind == "threshold" and dict(click.options)["fraction"] == pytest.approx(0.4)
    after_threshold = logic.segmentMask()
    np.testing.assert_array_equal(after_threshold, logic.session.mask_on_ct())

    logic.addClick(negative_ras, positive=False)  # refines from the threshold region
    logic.params.thresholdPercent = 50  # a later change does not re-mean the placed point
    order = logic.getParameterNode().GetParameter("clickOrder")
    assert order.startswith("T") and order.split(";")[1].startswith("-")
    expected = logic.segmentMask()
    mrml = slicer_bootstrap.save_scene(tmp_path / "scene")
    logic.undo()
    np.testing.assert_array_equal(logic.segmentMask(), after_threshold)  # exact undo
    logic.undo()
    np.testing.assert_array_equal(logic.segmentMask(), initial)
    assert threshold_node.GetNumberOfControlPoints() == 0
    logic.clear()

    slicer_bootstrap.load_scene(mrml)
    reloaded = module.InteractiveRefineLogic()
    reloaded.replayClicks()  # threshold point -> add_threshold with its own fraction (0.4)
    assert [c.kind for c in reloaded.session.clicks] == ["threshold", "point"]
    np.testing.assert_array_equal(reloaded.segmentMask(), expected)
    reloaded.reset()
    assert reloaded.getThresholdNode().GetNumberOfControlPoints() == 0
    reloaded.clear()


def test_a_refused_threshold_point_changes_nothing(logic, module, sts_nodes, tiny_package_dir, scene):
    """A PET without uptake to threshold (here STS_001's PET divided by 50): refused, nothing changed."""
    ct, pet, truth = sts_nodes
    cold = slicer.util.addVolumeFromArray(slicer.util.arrayFromVolume(pet) / 50.0, name="cold PET")
    matrix = vtk.vtkMatrix4x4()
    pet.GetIJKToRASMatrix(matrix)
    cold.SetIJKToRASMatrix(matrix)
    segment_sts(logic, (ct, cold, truth), tiny_package_dir)
    hot = hottest_tumour_ras(logic, (ct, cold, truth))
    before = logic.segmentMask()
    messages = []
    logic.errorCallback = messages.append
    with pytest.raises(ValueError, match="SUV"):
        logic.addThreshold(hot, percent=40)
    logic.getThresholdNode().AddControlPointWorld(*hot)  # the same, placed in a view
    assert len(messages) == 1 and "SUV" in messages[0]
    assert logic.getThresholdNode().GetNumberOfControlPoints() == 0
    assert logic.session.clicks == () and logic.getParameterNode().GetParameter("clickOrder") == ""
    np.testing.assert_array_equal(logic.segmentMask(), before)
