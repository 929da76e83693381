"""Finding PET/CT cases on disk: HECKTOR 2021 and 2022+ layouts, and CSV manifests.

- HECKTOR 2021: ``<id>_ct.nii.gz``, ``<id>_pt.nii.gz``, label ``<id>_ct_gtvt.nii.gz`` (GTVp = 1).
- HECKTOR 2022+: ``<id>__CT.nii.gz``, ``<id>__PT.nii.gz``, label ``<id>.nii.gz``
  (GTVp = 1, GTVn = 2), flat or one folder per case.
- CSV manifest with columns ``id,ct,pet,label`` (paths relative to the CSV; pet/label optional).

Used by the CLI, the Slicer batch script and the training package alike.
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
