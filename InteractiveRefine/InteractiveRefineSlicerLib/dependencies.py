"""Python packages the engine needs: read from ``Resources/requirements.txt`` (the one list),
compared with what is installed (versions, not only presence), and installed after the user agreed.

torch comes through the PyTorch extension (``PyTorchUtils``); the other packages through pip with
``--no-deps`` (MONAI's numpy/torch requirements must not replace Slicer's own), so their own floors
are not enforced by pip: this module checks them. No Qt: the Widget asks the questions.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
from dataclasses import dataclass

REQUIREMENTS_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "Resources", "requirements.txt")
#: What a first install downloads (CPU build of torch ~200 MB, CUDA builds ~2.5 GB; MONAI ~2 MB).
DOWNLOAD_SIZE = "about 200 MB (CPU) to 2.5 GB (CUDA) for PyTorch, and 3 MB for MONAI and safetensors"
_SPEC = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(.*)$")


class DependencyError(RuntimeError):
    """Installing failed; ``restartRequired`` when Slicer must restart before a retry."""

    def __init__(self, message: str, restartRequired: bool = False):
        super().__init__(message)
        self.restartRequired = restartRequired


@dataclass(frozen=True)
class Problem:
    """One package that is missing or has a version outside its requirement."""

    name: str
    requirement: str
    installed: str | None

    def describe(self) -> str:
        have = f"{self.installed} installed" if self.installed else "not installed"
        return f"{self.name}{self.requirement} ({have})"


def requirements(path: str = REQUIREMENTS_FILE) -> list:
    """``[(name, specifier), ...]`` from the requirements file (comments and blanks skipped)."""
    out = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line:
                name, spec = _SPEC.match(line).groups()
                out.append((name, spec.replace(" ", "")))
    return out


def _version(text: str) -> tuple:
    """A comparable release tuple: "2.4.1+cu121" -> (2, 4, 1); "2.5.0rc1" -> (2, 5, 0)."""
    release = re.match(r"(\d+(?:\.\d+)*)", text.split("+")[0])
    parts = [int(p) for p in release.group(1).split(".")] if release else [0]
    return tuple(parts + [0] * (4 - len(parts)))


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a comma-separated specifier (``>=``, ``>``, ``<=``, ``<``, ``==``)."""
    have = _version(version)
    for clause in filter(None, specifier.split(",")):
        op, wanted = re.match(r"(>=|<=|==|!=|>|<)(.+)", clause).groups()
        want = _version(wanted)
        ok = {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want,
              "==": have == want, "!=": have != want}[op]
        if not ok:
            return False
    return True


def installedVersion(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def problems(path: str = REQUIREMENTS_FILE) -> list:
    """The requirements not met by what is installed (missing, too old or too new)."""
    found = []
    for name, spec in requirements(path):
        version = installedVersion(name)
        if version is None or not satisfies(version, spec):
            found.append(Problem(name, spec, version))
    return found


def unsupportedPlatform(system: str | None = None, machine: str | None = None) -> str:
    """Why this machine cannot get the required torch ("" when it can)."""
    system, machine = system or platform.system(), (machine or platform.machine()).lower()
    if system == "Darwin" and machine in ("x86_64", "amd64", "i386"):
        return ("PyTorch 2.4 or newer has no builds for Intel Macs (the last is 2.2): "
                "InteractiveRefine needs a Mac with Apple silicon, Windows or Linux")
    return ""


def pyTorchExtensionInstalled() -> bool:
    return importlib.util.find_spec("PyTorchUtils") is not None


def installPlan(found: list) -> str:
    """The text the Widget shows before it asks to install (empty when nothing is to be done)."""
    if not found:
        return ""
    lines = [f"  - {p.describe()}" for p in found]
    return ("InteractiveRefine needs these Python packages:\n\n" + "\n".join(lines)
            + f"\n\nInstall or upgrade them now? This downloads {DOWNLOAD_SIZE} and may take minutes; "
            "Slicer may need a restart afterwards.")


def checkBeforeInstall(found: list) -> None:
    """Refuse clearly what no install can fix here (``DependencyError``)."""
    reason = unsupportedPlatform()
    if reason and any(p.name == "torch" for p in found):
        raise DependencyError(reason)
    if any(p.name == "torch" for p in found) and not pyTorchExtensionInstalled():
        raise DependencyError("Install the 'PyTorch' extension from the Extensions Manager, restart "
                              "Slicer, then press Segment again (it installs torch for this machine)")


def install(found: list, pipInstall) -> None:
    """Install or upgrade ``found`` (from :func:`problems`); ``pipInstall(args)`` is Slicer's
    ``slicer.util.pip_install``. Raises :class:`DependencyError`."""
    checkBeforeInstall(found)
    for problem in found:
        if problem.name == "torch":
            import PyTorchUtils

            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=problem.requirement)
            if torch is None:
                raise DependencyError("PyTorch was not installed", restartRequired=True)
        else:
            pipInstall(f"{problem.name}{problem.requirement} --no-deps")
    left = problems()
    if left:
        raise DependencyError("Still not met after installing: " + ", ".join(p.describe() for p in left)
                              + ". Restart Slicer and try again.", restartRequired=True)
