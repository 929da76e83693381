"""GTVp and GTVn in the Slicer Logic on real MRML (slicer-core), with a tiny random two-class
package on the engine's phantom: both segments with their terminology, written from the label
map; lymph-node (GTVn) points; exact undo of both segments; the status naming each click's class;
per-class measurements; the uncertainty map's range (2 ln 2) and colour legend; a suggestion of a
class; a one-class model refusing GTVn points with nothing changed.

The network is random: the tests assert what the module writes and keeps (segments equal to the
engine's label map, split by class; history; nodes), not what the masks look like.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import slicer
import vtk
from InteractiveRefineLib.model_package import create_random_model_package
from InteractiveRefineLib.networks import TINY_NETWORK, TINY_ROI

LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def two_class_dir(tmp_path_factory):
    return create_random_model_package(tmp_path_factory.mktemp("gtvp_gtvn_slicer"), network=TINY_NETWORK,
                                       roi_size_vox=TINY_ROI, seed=0, outputs=2)


def _segment(logic, module, model):
    ct, pet, truth = module.InteractiveRefineTest._phantom()
    roi, edge = module.InteractiveRefineTest._roiOnTumourBorder(ct, truth)
    logic.segment(ct, pet, None, roi, modelPath=str(model), device="cpu")
    return ct, np.asarray(edge, dtype=float)


def _tag(segment) -> str:
    value = vtk.reference("")
    assert segment.GetTag("TerminologyEntry", value)
    return str(value)


def _segments(logic) -> dict:
    return {name: logic.segmentMask(name).copy() for name in ("gtvp", "gtvn")}


def _assert_segments_are_the_label_map(logic):
    labels = logic.session.mask_on_ct()
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(logic.segmentMask("gtvp"), (labels == 1).astype(np.uint8))
    np.testing.assert_array_equal(logic.segmentMask("gtvn"), (labels == 2).astype(np.uint8))
    np.testing.assert_array_equal(logic.labelMap(), labels)


def test_two_segments_with_terminology_from_the_label_map(logic, module, two_class_dir):
    _segment(logic, module, two_class_dir)
    segmentation = logic.params.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["GTVp", "GTVn"]
    gtvp = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("GTVp"))
    gtvn = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("GTVn"))
    assert "SCT^86049000^Neoplasm, Primary" in _tag(gtvp)
    assert "SCT^14799000^Neoplasm, Secondary" in _tag(gtvn)
    assert "SCT^49755003^Morphologically Altered Structure" in _tag(gtvn)
    assert logic.params.nodalSegmentId == segmentation.GetSegmentIdBySegmentName("GTVn")
    assert logic.hasNodalClass and logic.getNodalClickNode(create=False) is not None
    _assert_segments_are_the_label_map(logic)


def test_gtvn_point_is_a_gtvn_click_and_undo_restores_both_segments(logic, module, two_class_dir):
    ct, edge = _segment(logic, module, two_class_dir)
    centre = np.asarray(logic.session.grid.center_ras(), dtype=float)
    initial = _segments(logic)
    logic.addClick(centre + (0.0, 4.0, 0.0), True)  # a GTVp point
    afterGtvp = _segments(logic)
    inputBefore = logic.session.refine_input()[0].numpy()

    logic.addClick(centre, True, label="gtvn")  # a lymph-node point
    nodal = logic.getNodalClickNode(create=False)
    positive, negative = logic.getClickNodes()
    assert nodal.GetNumberOfControlPoints() == 1 and positive.GetNumberOfControlPoints() == 1
    assert [c.label for c in logic.session.clicks] == [None, "gtvn"]
    assert logic.clickLists.order()[-1][0] == "nodal" and nodal.GetNthControlPointLabel(0) == "N2"
    # the click enters the GTVn guidance channel only: the GTVp one keeps the first click alone
    slices = logic.session.package.spec.stages["refine"].slices()
    after = logic.session.refine_input()[0].numpy()
    clicksPositive = slices["clicks_positive"]
    np.testing.assert_array_equal(after[clicksPositive][0], inputBefore[clicksPositive][0])
    assert after[clicksPositive][1].max() == 1.0 and not inputBefore[clicksPositive][1].any()
    _assert_segments_are_the_label_map(logic)
    assert "(GTVp, GTVn)" in logic.lastStatus
    assert "GTVp " in logic.lastStatus and "GTVn " in logic.lastStatus and " mL" in logic.lastStatus

    # a negative point, as if placed in a view: "not any class"
    negative.AddControlPointWorld(*(centre - (0.0, 4.0, 0.0)))
    assert [c.label for c in logic.session.clicks] == [None, "gtvn", None]
    assert "(GTVp, GTVn, not tumour)" in logic.lastStatus
    _assert_segments_are_the_label_map(logic)

    logic.undo()
    logic.undo()
    for name, mask in _segments(logic).items():
        np.testing.assert_array_equal(mask, afterGtvp[name])
    assert nodal.GetNumberOfControlPoints() == 0 and negative.GetNumberOfControlPoints() == 0
    logic.undo()
    for name, mask in _segments(logic).items():
        np.testing.assert_array_equal(mask, initial[name])


def test_gtvn_point_placed_in_a_view_and_replay(logic, module, two_class_dir):
    _segment(logic, module, two_class_dir)
    centre = np.asarray(logic.session.grid.center_ras(), dtype=float)
    logic.getNodalClickNode().AddControlPointWorld(*centre)  # as if placed with the GTVn button
    assert [c.label for c in logic.session.clicks] == ["gtvn"]
    labels = logic.session.mask_on_ct().copy()
    logic.endSession("test")
    logic.replayClicks()  # a reloaded scene: the lymph-node point is a GTVn click again
    assert [c.label for c in logic.session.clicks] == ["gtvn"]
    np.testing.assert_array_equal(logic.labelMap(), labels)


def test_measurements_per_class(logic, module, two_class_dir):
    _segment(logic, module, two_class_dir)
    centre = np.asarray(logic.session.grid.center_ras(), dtype=float)
    logic.addClick(centre, True, label="gtvn")
    measured = logic.lesionMeasurements()
    assert set(measured) == {"GTVp", "GTVn"}
    spacing = logic.session.ct.grid.spacing
    voxelMl = float(np.prod(spacing)) / 1000.0
    labels = logic.labelMap()
    for name, value in (("GTVp", 1), ("GTVn", 2)):
        assert measured[name]["volume_ml"] == pytest.approx((labels == value).sum() * voxelMl, abs=1e-3)


def test_uncertainty_range_legend_and_a_suggestion_of_a_class(logic, module, two_class_dir):
    _segment(logic, module, two_class_dir)
    node = logic.showUncertainty(passes=2)
    display = node.GetDisplayNode()
    assert display.GetWindowLevelMax() == pytest.approx(2 * LN2)
    assert slicer.util.arrayFromVolume(node).max() <= 2 * LN2 + 1e-6
    legend = slicer.modules.colors.logic().GetColorLegendDisplayNode(node)
    assert legend is not None and legend.GetVisibility() and "nats" in legend.GetTitleText()
    assert "of 1.39 nats" in logic.uncertaintyStatus
    suggestion = logic.lastUncertainty.suggestion
    assert suggestion is not None, "the tiny model left no uncertain region on the phantom"
    label = logic.suggestionLabel()
    point = logic.getSuggestionNode()
    if suggestion.positive:
        assert label == suggestion.label and point.GetNthControlPointLabel(0) == {"gtvp": "GTVp?",
                                                                                  "gtvn": "GTVn?"}[label]
    else:
        assert label is None and point.GetNthControlPointLabel(0) == "not tumour?"
    logic.acceptSuggestion()
    click = logic.session.clicks[-1]
    assert click.positive == suggestion.positive
    assert click.label == (label if label == "gtvn" else None)
    _assert_segments_are_the_label_map(logic)


def test_one_class_model_refuses_gtvn_points_and_changes_nothing(logic, module, tiny_package_dir, scene):
    _segment(logic, module, tiny_package_dir)
    segmentation = logic.params.segmentation.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == [
        "GTVp"]
    assert not logic.hasNodalClass and logic.getNodalClickNode(create=False) is None
    before = logic.segmentMask().copy()
    nodes = scene.GetNumberOfNodes()
    centre = np.asarray(logic.session.grid.center_ras(), dtype=float)
    with pytest.raises(ValueError, match="segments only gtvp"):
        logic.addClick(centre, True, label="gtvn")
    assert scene.GetNumberOfNodes() == nodes and logic.session.clicks == ()
    np.testing.assert_array_equal(logic.segmentMask(), before)
    # a point put into a lymph-node list anyway (e.g. a scene of a two-class session) is removed
    messages = []
    logic.errorCallback = messages.append
    nodal = logic.getNodalClickNode()
    logic._observeClickNodes()
    nodal.AddControlPointWorld(*centre)
    assert nodal.GetNumberOfControlPoints() == 0 and logic.session.clicks == ()
    assert messages and "gtvn" in messages[-1]
    np.testing.assert_array_equal(logic.segmentMask(), before)


def test_batch_csv_has_a_volume_column_per_class(scene, two_class_dir, tmp_path):
    import csv
    import sys
    from pathlib import Path

    from InteractiveRefineLib.geometry import write_volume
    from InteractiveRefineLib.phantom import make_phantom

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "InteractiveRefine"))
    import InteractiveRefineBatch

    ct, pet, label = make_phantom()
    paths = [tmp_path / f"{name}.nii.gz" for name in ("ct", "pet", "label")]
    for volume, path in zip((ct, pet, label), paths):
        write_volume(volume, path)
    manifest = tmp_path / "cases.csv"
    manifest.write_text("id,ct,pet,label\n" + "P1," + ",".join(map(str, paths)) + "\n")
    out = tmp_path / "out"
    status = InteractiveRefineBatch.main(["--input", str(manifest), "--output", str(out), "--model",
                                          str(two_class_dir), "--clicks", "1", "--device", "cpu"])
    assert status == 0
    with open(out / "metrics.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    columns = reader.fieldnames
    assert columns.index("gtvp_volume_ml") == columns.index("volume_ml") + 1
    assert columns.index("gtvn_volume_ml") == columns.index("volume_ml") + 2
    assert [int(r["clicks"]) for r in rows] == [0, 1]
    for row in rows:
        total = float(row["gtvp_volume_ml"]) + float(row["gtvn_volume_ml"])
        assert total == pytest.approx(float(row["volume_ml"]), abs=0.01)
    assert InteractiveRefineBatch.metricsColumns() == InteractiveRefineBatch.METRICS_COLUMNS
