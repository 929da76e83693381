"""Fixtures for the Slicer-module tests on slicer-core (real MRML, no Slicer application).

The bootstrap (``slicer_bootstrap.py``) runs once at collection; every test starts from an
empty scene. The whole folder is skipped when slicer-core is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# pytest drops the root conftest from sys.modules["conftest"] before importing this one, and tests
# elsewhere do `from conftest import data_path` (some at run time): re-export the root's helpers.
_spec = importlib.util.spec_from_file_location(
    "_interactive_refine_root_conftest", HERE.parents[1] / "conftest.py"
)
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
REPO, DATA_DIR, TINY_NETWORK, TINY_ROI = _root.REPO, _root.DATA_DIR, _root.TINY_NETWORK, _root.TINY_ROI
data_path, hot_sphere_pair, unanchored_package = (_root.data_path, _root.hot_sphere_pair,
                                                  _root.unanchored_package)

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer_bootstrap  # noqa: E402

slicer_bootstrap.bootstrap()
InteractiveRefine = slicer_bootstrap.load_module()

STS_CASE = ("sts_petct", "hecktor_layout", "STS_001")


@pytest.fixture
def scene():
    import slicer

    slicer.mrmlScene.Clear(0)
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(0)


@pytest.fixture
def module():
    return InteractiveRefine


@pytest.fixture
def logic(scene):
    logic = InteractiveRefine.InteractiveRefineLogic()
    yield logic
    logic.clear()


@pytest.fixture
def sts_nodes(scene):
    """STS_001 CT and PET loaded through the Volumes logic, plus the label array on the CT grid."""
    import slicer

    ct_path = data_path(*STS_CASE, "STS_001__CT.nii.gz")
    pet_path = data_path(*STS_CASE, "STS_001__PT.nii.gz")
    label_path = data_path(*STS_CASE, "STS_001.nii.gz")
    load = InteractiveRefine.InteractiveRefineLogic.loadVolume
    ct, pet, label = load(str(ct_path), "CT"), load(str(pet_path), "PET"), load(str(label_path), "label")
    truth = slicer.util.arrayFromVolume(label) > 0
    scene.RemoveNode(label)
    return ct, pet, truth
