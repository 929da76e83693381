"""Run the InteractiveRefine Slicer module on ``slicer-core`` (real MRML, no Slicer application).

Test-tree only: CMake never installs this file. It gives the module file what the Slicer
application normally provides (see ``shared/docs/SLICER_HEADLESS.md``):

- ``slicer.mrmlScene`` with a ``vtkSlicerApplicationLogic`` whose color logic has the default
  color nodes and is registered as "Colors";
- module logics registered on the application logic by module name and reachable as
  ``slicer.modules.<name>.logic()``: volumes, segmentations (which registers the segment
  converter rules), markups, colors, subjecthierarchy, data, transforms;
- ``slicer.ScriptedLoadableModule`` with minimal base classes (same names and the methods the
  module uses), ``slicer.selfTests``, and ``qt``/``ctk`` placeholders that say they are absent
  when touched (the Widget cannot run here; Logic and Test classes can).

It refuses to run inside the Slicer application (``slicer.app`` exists there). The batch script
imports it when it is started with plain Python.

Usage::

    import slicer_bootstrap
    slicer_bootstrap.bootstrap()          # idempotent; returns the scene
    import InteractiveRefine              # the module file
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import types
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "InteractiveRefine"

#: Module logics the bootstrap creates: (name under slicer.modules, name on the app logic, class).
MODULE_LOGICS = (
    ("volumes", "Volumes", "vtkSlicerVolumesLogic"),
    ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("markups", "Markups", "vtkSlicerMarkupsLogic"),
    ("subjecthierarchy", "SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("data", "Data", "vtkSlicerDataModuleLogic"),
    ("transforms", "Transforms", "vtkSlicerTransformLogic"),
)

_state: dict = {}


class BootstrapError(RuntimeError):
    """The bootstrap cannot run here (inside the Slicer application, or slicer-core missing)."""


class _AbsentModule(types.ModuleType):
    """Placeholder for a module the Slicer application has and slicer-core lacks (qt, ctk)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise BootstrapError(
            f"{self.__name__}.{name} is not available on slicer-core: the Widget needs the Slicer "
            "application; use the Logic instead"
        )


class _Module:
    """What ``slicer.modules.<name>`` offers here: ``logic()``."""

    def __init__(self, logic):
        self._logic = logic

    def logic(self):
        return self._logic


class _Parent:
    """Stand-in for the module's qSlicerScriptedLoadableModule parent (title, path, ...)."""

    def __init__(self, path: str):
        self.path = path
        self.title = ""
        self.categories = []
        self.dependencies = []
        self.contributors = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.icon = None


def _scripted_module_namespace(slicer):
    """``slicer.ScriptedLoadableModule`` with the four base classes the module file derives from."""
    mod = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            super().__init__()
            self.parent = parent
            self.moduleName = self.__class__.__name__
            slicer.selfTests[self.moduleName] = self.runTest

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

        def getDefaultModuleDocumentationLink(self, docPage=None):
            return ""

        def runTest(self, msec=100, **kwargs):
            module = sys.modules[self.__module__]
            testCase = getattr(module, self.moduleName + "Test")()
            testCase.messageDelay = msec
            testCase.runTest(**kwargs)

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            raise BootstrapError("module widgets need the Slicer application (Qt)")

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            super().__init__()
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Logic"):
                self.moduleName = self.moduleName[:-5]
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
            return slicer.mrmlScene.AddNode(self.createParameterNode())

        def createParameterNode(self):
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.enableScreenshots = False
            self.screenshotScaleFactor = 1.0

        def delayDisplay(self, message, requestedDelay=None, msec=None):
            logging.getLogger("slicer.selftest").info("%s", message)

        def takeScreenshot(self, name, description, type=-1):
            self.delayDisplay(description)

        def runTest(self):
            logging.warning("No test is defined in %s", self.__class__.__name__)

    for cls in (
        ScriptedLoadableModule,
        ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
    ):
        cls.__module__ = mod.__name__
        setattr(mod, cls.__name__, cls)
    mod.__all__ = [
        "ScriptedLoadableModule",
        "ScriptedLoadableModuleWidget",
        "ScriptedLoadableModuleLogic",
        "ScriptedLoadableModuleTest",
    ]
    return mod


def bootstrap():
    """Set up ``slicer`` like the application does (idempotent); return ``slicer.mrmlScene``."""
    try:
        import slicer
    except ImportError as exc:
        raise BootstrapError("slicer-core is not installed: pip install slicer-core") from exc
    if "scene" in _state:
        return slicer.mrmlScene
    if getattr(slicer, "app", None) is not None:
        raise BootstrapError("refusing to bootstrap inside the Slicer application (slicer.app exists)")
    if not hasattr(slicer, "vtkMRMLScene"):
        raise BootstrapError("this 'slicer' package is not slicer-core (no vtkMRMLScene)")

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    # The color logic looks for color files under <home>/<share>/ColorFiles; slicer-core ships
    # none, so point it at an empty folder (otherwise it logs an error at every start).
    home = Path(tempfile.gettempdir()) / "interactive_refine_slicer_home"
    (home / "share" / "ColorFiles").mkdir(parents=True, exist_ok=True)
    app_logic.SetHomeDirectory(str(home))
    app_logic.SetShareDirectory("share")
    app_logic.SetMRMLScene(scene)
    color_logic = slicer.vtkSlicerColorLogic()
    color_logic.SetMRMLApplicationLogic(app_logic)
    color_logic.SetMRMLScene(scene)  # adds the default color nodes
    app_logic.SetColorLogic(color_logic)
    app_logic.SetModuleLogic("Colors", color_logic)

    modules = types.SimpleNamespace(colors=_Module(color_logic))
    for attr, name, class_name in MODULE_LOGICS:
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        setattr(modules, attr, _Module(logic))

    slicer.mrmlScene = scene
    slicer.modules = modules
    slicer.selfTests = getattr(slicer, "selfTests", {})
    slicer.applicationLogic = app_logic  # not in the application's API; kept for tests
    slicer.ScriptedLoadableModule = _scripted_module_namespace(slicer)
    sys.modules["slicer.ScriptedLoadableModule"] = slicer.ScriptedLoadableModule
    for name in ("qt", "ctk"):
        if name not in sys.modules:
            sys.modules[name] = _AbsentModule(name)
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    _state["scene"] = scene
    _state["app_logic"] = app_logic
    return scene


def load_module():
    """Bootstrap, import the module file, and run its module class like Slicer does at startup."""
    bootstrap()
    import InteractiveRefine

    if "module" not in _state:
        _state["module"] = InteractiveRefine.InteractiveRefine(_Parent(InteractiveRefine.__file__))
    return InteractiveRefine


def save_scene(directory) -> Path:
    """Write every storable node of ``slicer.mrmlScene`` and the ``.mrml`` file into ``directory``.

    A stand-in for ``slicer.util.saveScene`` (which needs the application): volumes as
    ``.nrrd``, segmentations as ``.seg.nrrd``, markups as ``.mrk.json``.
    """
    import slicer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    scene = slicer.mrmlScene
    nodes = scene.GetNodesByClass("vtkMRMLStorableNode")
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if not node.GetSaveWithScene() or node.GetHideFromEditors() and not node.GetStorageNode():
            continue
        if node.IsA("vtkMRMLColorNode"):
            continue
        storage = node.GetStorageNode()
        if storage is None:
            if not node.AddDefaultStorageNode():
                continue
            storage = node.GetStorageNode()
        extension = storage.GetDefaultWriteFileExtension()
        name = f"{node.GetID()}_{node.GetName()}".replace(" ", "_").replace("/", "_")
        storage.SetFileName(str(directory / f"{name}.{extension}"))
        if not storage.WriteData(node):
            raise RuntimeError(f"cannot write {node.GetName()} to {storage.GetFileName()}")
    scene.SetRootDirectory(str(directory))
    mrml = directory / "scene.mrml"
    scene.SetURL(str(mrml))
    if not scene.Commit():
        raise RuntimeError(f"cannot write {mrml}")
    return mrml


def load_scene(mrml) -> None:
    """Clear ``slicer.mrmlScene`` and read a ``.mrml`` file with its data (storage nodes)."""
    import slicer

    scene = slicer.mrmlScene
    scene.Clear(0)
    scene.SetURL(str(mrml))
    if not scene.Import():
        raise RuntimeError(f"cannot read scene {mrml}")
