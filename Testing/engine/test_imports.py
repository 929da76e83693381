"""Direction of imports (ARCHITECTURE.md 2.2), checked on every file's imports with ``ast``.

- The engine (``InteractiveRefineLib``, every file, subpackages included) never imports slicer,
  qt, vtk, ctk, the Slicer module's code, the training package or the benchmarks.
- Importing the engine changes no environment variable: entry points apply the process-wide
  settings (``InteractiveRefineLib.runtime``).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "InteractiveRefine" / "InteractiveRefineLib"
ENGINE_FILES = sorted(ENGINE.rglob("*.py"))

#: Top-level packages the engine must never import.
FORBIDDEN_IN_ENGINE = (
    "slicer", "qt", "vtk", "ctk", "InteractiveRefine", "InteractiveRefineSlicerLib",
    "InteractiveRefineBatch", "interactive_refine_training", "benchmarks", "click_latency",
    "fast_vs_full", "web",
)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file (functions included).

    Relative imports are resolved against the file's package, so ``from ..x import y`` inside
    the engine stays an engine name.
    """
    package = ["InteractiveRefineLib", *path.relative_to(ENGINE).parent.parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              in ("import_module", "__import__") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def test_the_scan_sees_every_engine_file_and_its_imports():
    assert ENGINE / "__init__.py" in ENGINE_FILES and ENGINE / "runtime.py" in ENGINE_FILES
    assert "InteractiveRefineLib.geometry" in imported_modules(ENGINE / "demo.py")
    assert "scipy" in imported_modules(ENGINE / "phantom.py")  # imports inside functions count


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: p.relative_to(ENGINE).as_posix())
def test_the_engine_never_imports_slicer_qt_training_or_benchmarks(path):
    forbidden = {name for name in imported_modules(path) if name.split(".")[0] in FORBIDDEN_IN_ENGINE}
    assert not forbidden, f"{path.relative_to(REPO)} imports {sorted(forbidden)}"


def _module_names() -> list:
    """Dotted names of every engine module, from the files (nothing imported to find them)."""
    names = []
    for path in ENGINE_FILES:
        parts = ["InteractiveRefineLib", *path.relative_to(ENGINE).with_suffix("").parts]
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


#: Prints the environment keys that importing the engine package, then the modules named in
#: argv, changed (after ``{setup}``), and whether the bare package import loaded torch.
_ENVIRONMENT_SCRIPT = """
import importlib, os, sys
{setup}
before = dict(os.environ)
import InteractiveRefineLib
torch_after_package = "torch" in sys.modules
for name in sys.argv[1:]:
    importlib.import_module(name)
print(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))
print(torch_after_package)
"""


def _run_environment_script(setup: str = "", modules=()) -> list:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    done = subprocess.run([sys.executable, "-c", _ENVIRONMENT_SCRIPT.format(setup=setup), *modules],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-2:]


def test_importing_the_engine_package_changes_no_environment_variable_and_loads_no_torch():
    assert _run_environment_script() == ["[]", "False"]


def test_importing_any_engine_module_changes_no_environment_variable():
    # Third-party libraries first (monai sets CUBLAS_WORKSPACE_CONFIG): only the engine's own
    # changes count here.
    setup = "import numpy, scipy.ndimage, torch, monai.networks.nets"
    assert _run_environment_script(setup, _module_names())[0] == "[]"


def test_apply_process_settings_sets_the_allocator_option_and_reports_when_late():
    code = (
        "import logging, os\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from InteractiveRefineLib.runtime import apply_process_settings\n"
        "first = apply_process_settings()\n"
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), first.too_late)\n"
        "import torch\n"
        "print(apply_process_settings(threads=1).too_late, torch.get_num_threads())\n"
    )
    late = (
        "import os, torch\n"
        "from InteractiveRefineLib.runtime import apply_process_settings\n"
        "print(apply_process_settings().too_late, os.environ.get('THP_MEM_ALLOC_ENABLE'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}

    def run(script, extra=None):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                              env=dict(env, **(extra or {})), timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    assert run(code).stdout.split() == ["1", "False", "False", "1"]
    assert run(code, {"THP_MEM_ALLOC_ENABLE": "0"}).stdout.split()[:2] == ["0", "False"]  # kept
    done = run(late)
    assert done.stdout.split() == ["True", "1"]
    assert "THP_MEM_ALLOC_ENABLE=1 was set after torch was imported" in done.stderr


def test_pyproject_lists_every_engine_subpackage():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["InteractiveRefineLib"] == "InteractiveRefine/InteractiveRefineLib"
    packages = {".".join(("InteractiveRefineLib", *init.relative_to(ENGINE).parent.parts))
                for init in ENGINE.rglob("__init__.py")}
    assert packages <= set(setuptools["packages"]), "add to pyproject.toml [tool.setuptools] packages"
