"""Bad input through the Slicer Logic and the batch script: a clear ValueError that changes
nothing in the scene (Logic); a reported, skipped case whose CSV row says why (batch)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

from conftest import STS_CASE, data_path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "InteractiveRefine"))
sys.path.insert(0, str(REPO / "Testing" / "faults"))

import faults  # noqa: E402
import InteractiveRefineBatch  # noqa: E402


def _copy_node(scene, source, name, change=None, shift_mm=(0.0, 0.0, 0.0)):
    """A new scalar volume node with ``source``'s geometry (moved by ``shift_mm``) and its
    array passed through ``change``."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    matrix = vtk.vtkMatrix4x4()
    source.GetIJKToRASMatrix(matrix)
    for axis in range(3):
        matrix.SetElement(axis, 3, matrix.GetElement(axis, 3) + shift_mm[axis])
    node.SetIJKToRASMatrix(matrix)
    array = slicer.util.arrayFromVolume(source).astype(np.float32)
    slicer.util.updateVolumeFromArray(node, change(array) if change else array)
    return node


def _scene_state(scene, logic):
    logic.getParameterNode()  # the module's own node, made on first use (the Widget makes it on entry)
    names = sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))
    return names, logic.session


def _poke_nan(array):
    array = array.copy()
    array.reshape(-1)[[5, 500, array.size // 2]] = np.nan
    return array


@pytest.mark.parametrize("fault, change, expected", [
    ("ct_binary", ("CT", lambda a: (a > 0).astype(np.float32)), "not Hounsfield units"),
    ("pet_nan", ("PET", _poke_nan), "PET image contains 3 NaN or infinite voxels"),
    ("pet_huge", ("PET", lambda a: a * 1e30), "PET image has values up to"),
    ("pet_is_ct", ("PET", None), "PET image is identical to the CT image"),
])
def test_logic_refuses_bad_images_and_changes_nothing(fault, change, expected, logic, scene, sts_nodes,
                                                      tiny_package_dir):
    ct, pet, _ = sts_nodes
    role, function = change
    if fault == "pet_is_ct":
        pet = _copy_node(scene, ct, "PET copy of the CT")
    elif role == "CT":
        ct = _copy_node(scene, ct, fault, function)
    else:
        pet = _copy_node(scene, pet, fault, function)
    before = _scene_state(scene, logic)
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        logic.segment(ct, pet, None, None, modelPath=str(tiny_package_dir), device="cpu")
    assert _scene_state(scene, logic) == before


def test_logic_refuses_low_pet_coverage_unless_allowed_and_says_it(logic, scene, sts_nodes, tiny_package_dir):
    ct, pet, _ = sts_nodes
    far = _copy_node(scene, pet, "PET moved up", shift_mm=(0.0, 0.0, 105.0))
    before = _scene_state(scene, logic)
    with pytest.raises(ValueError, match=r"PET covers only 25% of the region of interest"):
        logic.segment(ct, far, None, None, modelPath=str(tiny_package_dir), device="cpu")
    assert _scene_state(scene, logic) == before
    messages = []
    logic.logCallback = messages.append
    logic.allowLowPetCoverage = True
    logic.segment(ct, far, None, None, modelPath=str(tiny_package_dir), device="cpu")
    assert "The PET covers 25% of the region of interest" in messages


def test_logic_refuses_a_truncated_file_without_adding_a_node(logic, scene, tmp_path):
    broken = faults.truncated(data_path(*STS_CASE, "STS_001__CT.nii.gz"), tmp_path)
    count = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="truncated_STS_001__CT.nii.gz: the gzip stream is damaged"):
        logic.loadVolume(str(broken), "CT")
    assert scene.GetNumberOfNodes() == count


def test_batch_reports_and_skips_bad_cases(scene, tiny_package_dir, tmp_path):
    case = data_path(*STS_CASE)
    ct, pet = case / "STS_001__CT.nii.gz", case / "STS_001__PT.nii.gz"
    truncated = faults.truncated(ct, tmp_path)
    binary = faults.with_values(ct, tmp_path, "binary_CT.nii.gz", lambda a: a > 0, np.uint8)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "id,ct,pet,label\n"
        f"TRUNCATED,{truncated},{pet},\n"
        f"SAME,{ct},{ct},\n"
        f"GOOD,{ct},{pet},\n"
        f"BINARY,{binary},{pet},\n"
    )
    out = tmp_path / "out"
    status = InteractiveRefineBatch.main(["--input", str(manifest), "--output", str(out), "--model",
                                          str(tiny_package_dir), "--device", "cpu"])
    with open(out / "metrics.csv", newline="") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    assert status == 1 and rows["GOOD"]["error"] == "" and (out / "GOOD.seg.nrrd").is_file()
    assert "gzip stream is damaged or truncated" in rows["TRUNCATED"]["error"]
    assert "PET image is identical to the CT image" in rows["SAME"]["error"]
    assert "a mask, not Hounsfield units" in rows["BINARY"]["error"]
    assert sorted(p.name for p in out.glob("*.seg.nrrd")) == ["GOOD.seg.nrrd"]
