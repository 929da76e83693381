"""Static checks of the module file, its .ui, resources and CMake lists (what the Extensions Index
and Slicer's Python 3.9-era builds need)."""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "InteractiveRefine"
MODULE_FILE = MODULE_DIR / "InteractiveRefine.py"
BATCH_FILE = MODULE_DIR / "InteractiveRefineBatch.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "InteractiveRefine.ui"
HEAVY = ("torch", "monai", "InteractiveRefineLib", "scipy", "SimpleITK")


def top_level_imports(path: Path) -> set:
    """Modules imported outside any function or class (also inside top-level if/try blocks)."""
    names = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []) or [])

    visit(ast.parse(path.read_text()).body)
    return names


@pytest.mark.parametrize("path", [MODULE_FILE, BATCH_FILE], ids=lambda p: p.name)
def test_python39_syntax(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_ruff_py39():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    files = [MODULE_FILE, BATCH_FILE, *sorted((REPO / "Testing" / "slicer").glob("*.py")),
             *sorted((MODULE_DIR / "InteractiveRefineSlicerLib").glob("*.py"))]
    done = subprocess.run(
        [ruff, "check", "--target-version", "py39", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", [MODULE_FILE, BATCH_FILE], ids=lambda p: p.name)
def test_no_heavy_import_at_file_scope(path):
    heavy = {name for name in top_level_imports(path) if name.split(".")[0] in HEAVY}
    assert not heavy


def test_importing_the_module_loads_no_torch_and_changes_no_environment():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import os; before = dict(os.environ)\n"
        "import slicer_bootstrap; slicer_bootstrap.load_module()\n"
        "print(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))\n"
        "print(sorted(m for m in ('torch', 'monai', 'scipy') if m in sys.modules))"
    ) % str(Path(__file__).resolve().parent)
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    # Loading the module (what Slicer does at start) leaves the allocator option to the Logic,
    # which applies it when it creates a session.
    assert done.stdout.strip().splitlines()[-2:] == ["[]", "[]"]


def test_module_runs_no_code_at_import():
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    for node in ast.parse(MODULE_FILE.read_text()).body:
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        assert docstring or isinstance(node, allowed), f"line {node.lineno}: {ast.dump(node)[:80]}"


def test_four_classes_with_slicer_bases():
    classes = {
        node.name: [ast.unparse(base) for base in node.bases]
        for node in ast.parse(MODULE_FILE.read_text()).body
        if isinstance(node, ast.ClassDef)
    }
    assert classes["InteractiveRefine"] == ["ScriptedLoadableModule"]
    assert classes["InteractiveRefineWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert classes["InteractiveRefineLogic"][0] == "ScriptedLoadableModuleLogic"
    assert classes["InteractiveRefineTest"] == ["ScriptedLoadableModuleTest"]


def test_ui_has_every_widget_the_module_uses():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    tree = ElementTree.parse(UI_FILE)
    defined = {widget.get("name") for widget in tree.iter("widget")}
    assert used, "the Widget uses no .ui widget?"
    assert used <= defined, f"missing in {UI_FILE.name}: {sorted(used - defined)}"
    assert tree.getroot().find("widget").get("class") == "qMRMLWidget"
    custom = {c.findtext("class") for c in tree.iter("customwidget")}
    used_classes = {w.get("class") for w in tree.iter("widget")}
    assert {c for c in used_classes if c.startswith(("q", "ctk"))} <= custom


def test_slicer_util_functions_are_called_through_slicer_util():
    import slicer.util

    util_names = {
        name
        for name, value in vars(slicer.util).items()
        if (inspect.isfunction(value) or inspect.isclass(value))
        and getattr(value, "__module__", "") == "slicer.util"
    }
    for path in (MODULE_FILE, BATCH_FILE):
        wrong = set(re.findall(r"\bslicer\.(\w+)", path.read_text())) & util_names
        assert not wrong, f"{path.name}: use slicer.util.X for {sorted(wrong)}"


def test_cmake_lists_every_engine_file():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"\$\{MODULE_NAME\}((?:Slicer)?Lib/[\w/]+\.py|\w*\.py)", cmake))
    for package in ("Lib", "SlicerLib"):
        folder = MODULE_DIR / f"InteractiveRefine{package}"
        files = {f"{package}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*.py")}
        assert files <= listed, f"add to InteractiveRefine/CMakeLists.txt: {sorted(files - listed)}"
    assert "SlicerLib/logic.py" in listed
    assert {".py", "Batch.py"} <= listed
    for text in (
        "slicerMacroBuildScriptedModule",
        "WITH_GENERIC_TESTS",
        "slicer_add_python_unittest",
        "Resources/Icons/${MODULE_NAME}.png",
        "Resources/UI/${MODULE_NAME}.ui",
        "Resources/Models/default/*",
        "if(BUILD_TESTING)",
    ):
        assert text in cmake
    for model in (MODULE_DIR / "Resources" / "Models").iterdir():  # every shipped package installs
        assert f"Resources/Models/{model.name}/*" in cmake, model.name


def test_root_cmake_is_an_extension():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"project\(InteractiveRefine\)", cmake)
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in cmake
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in cmake
    for text in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(InteractiveRefine)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert text in cmake
    assert "Testing" not in re.findall(r"add_subdirectory\((\w+)\)", cmake)


def test_requirements_are_one_list_read_by_the_module():
    from InteractiveRefineSlicerLib import dependencies

    names = [name for name, _ in dependencies.requirements()]
    assert names[:3] == ["torch", "monai", "safetensors"]  # torch: through the PyTorch extension
    assert dict(dependencies.requirements())["monai"] == "==1.5.2"  # the tested MONAI, pinned
    assert dependencies.satisfies("2.4.1", dict(dependencies.requirements())["torch"])  # MONAI 1.5.2's floor
    assert not dependencies.satisfies("2.4.0", dict(dependencies.requirements())["torch"])
    assert not {"numpy", "SimpleITK", "scipy"} & set(names)  # bundled with Slicer: never reinstalled


def test_icon_is_a_128_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "InteractiveRefine.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


def test_bootstrap_refuses_inside_the_application(monkeypatch):
    import slicer
    import slicer_bootstrap

    monkeypatch.setattr(slicer_bootstrap, "_state", {})
    monkeypatch.setattr(slicer, "app", object(), raising=False)
    with pytest.raises(slicer_bootstrap.BootstrapError, match="inside the Slicer application"):
        slicer_bootstrap.bootstrap()


SLICER_LIB = MODULE_DIR / "InteractiveRefineSlicerLib"


def test_slicer_lib_imports_no_qt_and_nothing_heavy_at_file_scope():
    for path in sorted(SLICER_LIB.glob("*.py")):
        names = {name.split(".")[0] for name in top_level_imports(path)}
        assert not names & {"qt", "ctk", "torch", "monai", "InteractiveRefineLib"}, path.name
        text = path.read_text()
        assert not re.search(r"^\s*(import qt|from qt|import ctk)", text, re.M), path.name


def test_slicer_lib_is_importable_headless():
    import importlib

    for path in sorted(SLICER_LIB.glob("*.py")):
        importlib.import_module(f"InteractiveRefineSlicerLib.{path.stem}" if path.stem != "__init__"
                                else "InteractiveRefineSlicerLib")


def _function_lengths(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_sizes_the_architecture_sets():
    assert len(MODULE_FILE.read_text().splitlines()) < 800
    assert len((SLICER_LIB / "logic.py").read_text().splitlines()) < 400
    for path in [MODULE_FILE, *sorted(SLICER_LIB.glob("*.py"))]:
        long = [(name, n) for name, n in _function_lengths(path) if n > 60]
        assert not long, f"{path.name}: functions over 60 lines: {long}"
    for path in sorted(SLICER_LIB.glob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_the_logic_takes_the_scene_as_an_argument(scene):
    import inspect

    from InteractiveRefineSlicerLib.logic import RefineLogic

    assert list(inspect.signature(RefineLogic).parameters)[:2] == ["scene", "segmentationsLogic"]
    assert "slicer.mrmlScene" not in (SLICER_LIB / "logic.py").read_text().replace(
        "scene if scene is not None else slicer.mrmlScene", "")


def test_extension_metadata_for_the_index():
    import json

    cmake = (REPO / "CMakeLists.txt").read_text()
    contributors = re.search(r'set\(EXTENSION_CONTRIBUTORS "([^"]+)"\)', cmake).group(1)
    assert all(re.fullmatch(r"[^()]+ \([^()]+\)", c.strip()) for c in contributors.split(","))
    screenshots = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', cmake).group(1).split()
    assert screenshots and all(url.startswith("https://") and url.endswith(".png") for url in screenshots)
    for url in screenshots:  # each URL points at a file of this repository
        path = REPO / url.split("/main/", 1)[1]
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000, path
    index = json.loads((REPO / "InteractiveRefine.json").read_text())
    assert index["build_dependencies"] == ["PyTorch"]
    assert index["category"] == "Segmentation" and index["scm_url"].startswith("https://github.com/")
    assert index["tier"] in (1, 3, 5)


def test_minor_items_of_issue_25():
    """The hidden batch module names its contributors (not the template's); the README's self-test
    command has a signature that exists; the model path line edit keeps a history."""
    assert "parent.contributors = [" in BATCH_FILE.read_text()
    readme = (REPO / "README.md").read_text()
    assert "runUnitTest(['InteractiveRefine'])" not in readme
    assert "slicer.selfTests['InteractiveRefine']()" in readme
    text = MODULE_FILE.read_text()
    assert 'settingKey = "InteractiveRefine/ModelPath"' in text and "addCurrentPathToHistory()" in text
    assert "nodeAddedByUser(vtkMRMLNode*)" in text  # "Create new ROI" starts placing it
