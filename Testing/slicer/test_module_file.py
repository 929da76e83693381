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
    files = [MODULE_FILE, BATCH_FILE, *sorted((REPO / "Testing" / "slicer").glob("*.py"))]
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
    listed = set(re.findall(r"\$\{MODULE_NAME\}(Lib/[\w/]+\.py|\w*\.py)", cmake))
    engine_dir = MODULE_DIR / "InteractiveRefineLib"
    engine = {f"Lib/{p.relative_to(engine_dir).as_posix()}" for p in engine_dir.rglob("*.py")}
    assert engine <= listed, f"add to InteractiveRefine/CMakeLists.txt: {sorted(engine - listed)}"
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


def test_requirements_match_the_module(module):
    lines = [
        line.strip()
        for line in (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == list(module.PIP_REQUIREMENTS)
    assert not any(
        line.split("<")[0].split(">")[0].split("=")[0] in ("numpy", "SimpleITK", "torch") for line in lines
    )


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
