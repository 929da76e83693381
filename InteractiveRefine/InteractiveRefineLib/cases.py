"""Finding PET/CT cases on disk: HECKTOR 2021 and 2022+ layouts, and CSV manifests.

- HECKTOR 2021: ``<id>_ct.nii.gz``, ``<id>_pt.nii.gz``, label ``<id>_ct_gtvt.nii.gz`` (GTVp = 1).
- HECKTOR 2022+: ``<id>__CT.nii.gz``, ``<id>__PT.nii.gz``, label ``<id>.nii.gz``
  (GTVp = 1, GTVn = 2), flat or one folder per case.
- CSV manifest with columns ``id,ct,pet,label`` (paths relative to the CSV; pet/label optional).

Used by the CLI, the Slicer batch script and the training package alike. :func:`find_data_dir`
is the one place that knows where the shared sample data lives (demo, tests, benchmarks,
the module's self-test).
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError

_PATTERNS = (
    # (regex on the file name, role)
    (re.compile(r"^(?P<id>.+)__CT\.nii(\.gz)?$"), "ct"),
    (re.compile(r"^(?P<id>.+)__PT\.nii(\.gz)?$"), "pet"),
    (re.compile(r"^(?P<id>.+)_ct_gtvt\.nii(\.gz)?$"), "label"),
    (re.compile(r"^(?P<id>.+)_ct\.nii(\.gz)?$"), "ct"),
    (re.compile(r"^(?P<id>.+)_pt\.nii(\.gz)?$"), "pet"),
)
_LABEL_2022 = re.compile(r"^(?P<id>[^_][^.]*?)\.nii(\.gz)?$")

#: Environment variable naming the shared data folder (the sample cases).
DATA_DIR_VARIABLE = "INTERACTIVE_REFINE_DATA"
#: The repository checkout holding this engine (``InteractiveRefine/InteractiveRefineLib/..``).
REPO_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    """One study: paths of CT, PET (optional) and label (optional)."""

    case_id: str
    ct: Path
    pet: Path | None = None
    label: Path | None = None


def _role_of(name: str):
    for pattern, role in _PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group("id"), role
    match = _LABEL_2022.match(name)
    if match and "__" not in name:
        return match.group("id"), "label"
    return None, None


def find_cases(folder: str | os.PathLike) -> list[Case]:
    """All cases under ``folder`` (searched recursively), sorted by id; a CSV file is a manifest."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() == ".csv":
        return read_manifest(folder)
    if not folder.is_dir():
        raise ImageError(f"case folder not found: {folder}")
    found: dict[str, dict] = {}
    for path in sorted(folder.rglob("*.nii*")):
        case_id, role = _role_of(path.name)
        if case_id is None:
            continue
        found.setdefault(case_id, {}).setdefault(role, path)
    cases = [
        Case(case_id, roles["ct"], roles.get("pet"), roles.get("label"))
        for case_id, roles in sorted(found.items())
        if "ct" in roles
    ]
    if not cases:
        raise ImageError(
            f"no cases found in {folder}: expected HECKTOR names (<id>__CT.nii.gz / <id>__PT.nii.gz / "
            "<id>.nii.gz, or <id>_ct.nii.gz / <id>_pt.nii.gz / <id>_ct_gtvt.nii.gz) or a CSV manifest"
        )
    return cases


def read_manifest(path: str | os.PathLike) -> list[Case]:
    """Cases of a CSV manifest with columns ``id,ct,pet,label`` (paths relative to the file)."""
    path = Path(path)
    base = path.parent
    cases = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "ct"} - set(reader.fieldnames or ())
        if missing:
            raise ImageError(f"{path}: manifest lacks column(s) {sorted(missing)}")
        for row in reader:
            paths = {key: (row.get(key) or "").strip() for key in ("ct", "pet", "label")}
            resolved = {key: (base / value) if value else None for key, value in paths.items()}
            cases.append(Case(row["id"].strip(), resolved["ct"], resolved["pet"], resolved["label"]))
    return cases


def find_data_dir(explicit: str | os.PathLike | None = None, containing: str | None = None) -> Path:
    """The shared data folder (sample cases); the first of these that exists wins:

    1. ``explicit`` (e.g. a ``--data`` option);
    2. ``$INTERACTIVE_REFINE_DATA``;
    3. ``shared/data`` beside the repository checkout (``../shared/data`` from its root);
    4. ``shared/data`` beside the working directory (an installed engine run from a checkout).

    ``containing``: a path relative to the folder that must exist too (e.g. one case's folder).
    When no candidate qualifies, the first one is returned, so that callers can say where the
    data was looked for; callers check that what they need is there.
    """
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get(DATA_DIR_VARIABLE):
        candidates.append(Path(os.environ[DATA_DIR_VARIABLE]))
    candidates += [REPO_DIR.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir() and (containing is None or (candidate / containing).exists()):
            return candidate
    return candidates[0]
