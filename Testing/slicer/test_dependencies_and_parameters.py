"""Dependencies and parameters (package versions, one requirements list, Intel macOS, the PyTorch
extension) and the typed parameter node with the upgrade of older scenes (restructure)."""

from __future__ import annotations

import pytest
import slicer
from InteractiveRefineSlicerLib import dependencies, parameters


# ------------------------------------------------------------ items 4 and 8
def installed(monkeypatch, versions):
    monkeypatch.setattr(dependencies, "installedVersion", lambda name: versions.get(name))


def test_an_older_torch_from_another_extension_is_reported(monkeypatch):
    installed(monkeypatch, {"torch": "2.1.2+cu118", "monai": "1.5.2", "safetensors": "0.4.5",
                            "pydicom": "2.4.4"})
    found = dependencies.problems()
    assert [p.name for p in found] == ["torch"]
    assert found[0].describe() == "torch>=2.4.1 (2.1.2+cu118 installed)"
    assert "torch>=2.4.1 (2.1.2+cu118 installed)" in dependencies.installPlan(found)


def test_monai_is_pinned_and_missing_packages_listed(monkeypatch):
    installed(monkeypatch, {"torch": "2.5.1", "monai": "1.4.0", "pydicom": "3.0.1"})
    found = {p.name: p for p in dependencies.problems()}
    assert set(found) == {"monai", "safetensors"}
    assert found["safetensors"].installed is None
    plan = dependencies.installPlan(list(found.values()))
    assert "200 MB" in plan and "2.5 GB" in plan  # the real download size is said before asking


def test_nothing_to_do_when_the_versions_match(monkeypatch):
    installed(monkeypatch, {"torch": "2.13.0+cpu", "monai": "1.5.2", "safetensors": "0.8.0",
                            "pydicom": "3.0.1"})
    assert dependencies.problems() == [] and dependencies.installPlan([]) == ""


def test_intel_macs_are_told_plainly(monkeypatch):
    assert "Intel Macs" in dependencies.unsupportedPlatform("Darwin", "x86_64")
    assert dependencies.unsupportedPlatform("Darwin", "arm64") == ""
    assert dependencies.unsupportedPlatform("Linux", "x86_64") == ""
    monkeypatch.setattr(dependencies, "unsupportedPlatform", lambda: "PyTorch 2.4 ... Intel Macs")
    with pytest.raises(dependencies.DependencyError, match="Intel Macs"):
        dependencies.checkBeforeInstall([dependencies.Problem("torch", ">=2.4.1", "2.2.2")])


def test_the_pytorch_extension_is_checked_before_asking(monkeypatch):
    monkeypatch.setattr(dependencies, "unsupportedPlatform", lambda: "")
    monkeypatch.setattr(dependencies, "pyTorchExtensionInstalled", lambda: False)
    with pytest.raises(dependencies.DependencyError, match="'PyTorch' extension"):
        dependencies.checkBeforeInstall([dependencies.Problem("torch", ">=2.4.1", None)])
    dependencies.checkBeforeInstall([dependencies.Problem("monai", "==1.5.2", None)])  # no torch: fine


def test_install_uses_pip_with_no_deps_and_rechecks(monkeypatch):
    calls = []
    monkeypatch.setattr(dependencies, "problems", lambda: [])
    dependencies.install([dependencies.Problem("monai", "==1.5.2", "1.4.0")], calls.append)
    assert calls == ["monai==1.5.2 --no-deps"]


def test_version_comparison():
    assert dependencies.satisfies("2.10.0", ">=2.4.1")  # numeric, not string order
    assert not dependencies.satisfies("1.5.2rc1", "==1.5.3")
    assert dependencies.satisfies("0.4.5", ">=0.4,<1") and not dependencies.satisfies("1.0.0", ">=0.4,<1")


# ---------------------------------------------------------- parameter node
def old_parameter_node(scene, ct, node=None):
    """A parameter node as the previous module version saved it (``node``: made into one)."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "InteractiveRefine old")
    for name in list(node.GetParameterNames()):
        node.UnsetParameter(name)
    for role in ("ct", "pet", "roi", "segmentation", "positiveClicks", "negativeClicks", "thresholdClicks"):
        node.RemoveNodeReferenceIDs(role)
    for name, value in (("AutoRefine", "false"), ("RegionRemoval", "true"), ("ExactFollowUp", "true"),
                        ("ModelPath", "/models/x"), ("Device", "cpu"), ("ClickOrder", "+1;-2")):
        node.SetParameter(name, value)
    node.SetNodeReferenceID("CT", ct.GetID())
    return node


def test_an_older_scene_is_upgraded_before_it_is_wrapped(scene):
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    node = old_parameter_node(scene, ct)
    assert parameters.upgrade(node)
    params = parameters.InteractiveRefineParameterNode(node)
    assert params.ct is ct
    assert params.autoRefine is False and params.regionRemoval is True and params.exactFollowUp is True
    assert (params.modelPath, params.device, params.clickOrder) == ("/models/x", "cpu", "+1;-2")
    assert params.thresholdPercent == 40  # new parameter: its default
    assert not parameters.upgrade(node)  # once


def test_without_the_upgrade_the_wrapper_would_lose_them(scene):
    """Why upgrade() exists: the wrapper reads "true" as False and writes None over references
    that lack a same-named string (slicer.parameterNodeWrapper's serializers; same here)."""
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    node = old_parameter_node(scene, ct)
    node.SetParameter("regionRemoval", "true")  # as the old version wrote booleans
    params = parameters.InteractiveRefineParameterNode(node)
    assert params.regionRemoval is False  # "true" is not "True"
    assert params.ct is None and node.GetNodeReferenceID("CT") == ct.GetID()  # the CT is not found


def test_the_logic_reads_an_old_scene_through_the_upgrade(scene, logic):
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    node = old_parameter_node(scene, ct, logic.getParameterNode())  # the singleton, as an old scene
    assert node.GetParameter("AutoRefine") == "false" and node.GetNodeReferenceID("CT") == ct.GetID()
    assert logic.params.ct is ct and logic.params.autoRefine is False
    assert node.GetParameter("autoRefine") == "False" and node.GetParameter("Version") == parameters.VERSION


def test_typed_values_are_stored_as_slicer_stores_them(scene, logic):
    params = logic.params
    params.exactFollowUp = False
    params.thresholdPercent = 50
    node = logic.getParameterNode()
    assert node.GetParameter("exactFollowUp") == "False" and node.GetParameter("thresholdPercent") == "50"
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    params.roi = roi
    assert node.GetNodeReferenceID("roi") == roi.GetID() and node.HasParameter("roi")
    assert slicer.mrmlScene is scene


def test_the_logic_checks_the_torch_version_on_first_use(logic, sts_nodes, tiny_package_dir, monkeypatch):
    versions = {"torch": "2.1.0", "monai": "1.5.2", "safetensors": "0.8.0", "pydicom": "3.0.1"}
    installed(monkeypatch, versions)
    ct, pet, _ = sts_nodes
    with pytest.raises(ValueError, match=r"torch>=2\.4\.1 \(2\.1\.0 installed\)"):
        logic.segment(ct, pet, None, None, modelPath=str(tiny_package_dir), device="cpu")
    assert logic.session is None and slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
