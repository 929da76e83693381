"""Cases, patient-level folds and the preprocessed cache.

Every case is preprocessed once, by the engine's own functions, into the model's working grid
(1 mm isotropic ROI of the card's size, centred on the GTVp centroid as in the paper's section
4.1, or on the CT centre when the case has no GTVp): normalised image channels ``[C, k, j, i]``
as float16 and the integer label as uint8. One ``.npz`` per case lives under
``<cache_dir>/<hash of the preprocessing settings>/``, so an epoch never resamples, and a change
of the ROI, spacing, intensity preset or label value gets a fresh cache. A case file is rebuilt
when its source files change (path, size and modification time are fingerprinted).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from InteractiveRefineLib import geometry
from InteractiveRefineLib.cases import Case, find_cases
from InteractiveRefineLib.dicom_import import read_label
from InteractiveRefineLib.dicom_series import read_pet
from InteractiveRefineLib.geometry import Volume, read_volume
from InteractiveRefineLib.intensity import images_on_grid, normalize_channels, pet_to_suv
from InteractiveRefineLib.simulation import label_centroid_ras

from .config import settings_hash

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "interactive_refine_training"


# ------------------------------------------------------------------------------------- cases
def load_cases(source: str | os.PathLike, case_ids=None, need_label: bool = True) -> list[Case]:
    """Cases of a HECKTOR 2021/2022+ folder or CSV manifest (engine's ``find_cases``), by id."""
    cases = find_cases(source)
    if need_label:
        unlabeled = [c.case_id for c in cases if c.label is None]
        if unlabeled:
            logger.warning("skipping %d case(s) without a label: %s", len(unlabeled), unlabeled[:5])
        cases = [c for c in cases if c.label is not None]
    if case_ids:
        wanted = list(case_ids)
        by_id = {c.case_id: c for c in cases}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise ValueError(f"case id(s) not found in {source}: {missing}")
        cases = [by_id[i] for i in wanted]
    if not cases:
        raise ValueError(f"no labelled cases in {source}")
    return cases


def write_manifest(out, sources, exclude=()) -> dict:
    """Write one CSV manifest (``id,ct,pet,label``, paths relative to it) of the labelled cases of
    ``sources`` less the ids ``exclude``; returns the number of cases taken from each source.
    ValueError for an id found twice or an excluded id found nowhere."""
    import csv

    out = Path(out)
    rows, counts, seen = [], {}, set()
    for source in sources:
        cases = load_cases(source)
        counts[str(source)] = 0
        for case in cases:
            if case.case_id in seen:
                raise ValueError(f"case id {case.case_id} appears in more than one source")
            seen.add(case.case_id)
            if case.case_id in exclude:
                continue
            rel = {key: os.path.relpath(getattr(case, key), out.parent) if getattr(case, key) else ""
                   for key in ("ct", "pet", "label")}
            rows.append({"id": case.case_id, **rel})
            counts[str(source)] += 1
    unknown = sorted(set(exclude) - seen)
    if unknown:
        raise ValueError(f"excluded case id(s) not found in {list(map(str, sources))}: {unknown}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "ct", "pet", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return counts


# ------------------------------------------------------------------------------------- folds
def patient_of(case_id: str, pattern: str | None) -> str:
    """Patient key of a case id: the first group of ``pattern`` (or the whole id)."""
    if not pattern:
        return case_id
    match = re.search(pattern, case_id)
    return (match.group(1) if match.groups() else match.group(0)) if match else case_id


def fold_assignment(case_ids, n_folds: int, seed: int, pattern: str | None = None) -> dict:
    """``{case_id: fold}``: patients shuffled with ``seed`` and dealt round-robin into folds.

    Deterministic and independent of the input order for a given set of ids; every case of a
    patient lands in the same fold.
    """
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    patients = sorted({patient_of(c, pattern) for c in case_ids})
    order = np.random.default_rng(seed).permutation(len(patients))
    fold_of = {patients[j]: position % n_folds for position, j in enumerate(order)}
    return {c: fold_of[patient_of(c, pattern)] for c in sorted(case_ids)}


def split(case_ids, fold: int, n_folds: int, seed: int, pattern: str | None = None):
    """``(train_ids, val_ids)`` of one fold, both sorted."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is outside 0..{n_folds - 1}")
    assignment = fold_assignment(case_ids, n_folds, seed, pattern)
    train = [c for c, f in assignment.items() if f != fold]
    val = [c for c, f in assignment.items() if f == fold]
    if not train or not val:
        raise ValueError(f"fold {fold} of {n_folds} leaves an empty training or validation set")
    return train, val


# ----------------------------------------------------------------------------- preprocessing
def roi_center_ras(ct: Volume, label: Volume | None, label_value, others=()) -> np.ndarray:
    """RAS centre of the ROI: centroid of ``label == label_value``, else (a case without a GTVp
    in a multi-class setting) the centroid of the voxels of ``others`` label values, else the CT
    centre."""
    center = label_centroid_ras(label, label_value) if label is not None else None
    rest = [int(v) for v in others if int(v) != int(label_value)]
    if center is None and label is not None and rest:
        voxels = np.argwhere(np.isin(np.rint(label.array), rest))
        if len(voxels):
            center = label.grid.index_to_ras(voxels.mean(axis=0)[::-1])
    return ct.grid.center_ras() if center is None else center


def preprocess_case(case: Case, settings: dict) -> dict:
    """Arrays of one case on its working grid: ``image`` float16 ``[C,k,j,i]``, ``label`` uint8."""
    ct = read_volume(case.ct)
    label = read_label(case.label) if case.label is not None else None  # a DICOM SEG too
    center = ct.grid.center_ras()
    if settings["roi_center"] == "label_centroid":
        center = roi_center_ras(ct, label, settings["label_value"], settings.get("roi_center_labels", ()))
    grid = geometry.working_grid(ct.grid, center, settings["roi_size_vox"], settings["spacing_mm"])
    pet = None
    if "pet" in settings["image_channels"]:
        if case.pet is None:
            raise ValueError(f"case {case.case_id} has no PET image")
        pet = read_pet(case.pet)  # a PET DICOM folder becomes SUVbw
    ct_roi, pet_roi = images_on_grid(ct, pet, grid)
    image = normalize_channels(ct_roi, pet_roi, settings["intensity_preset"]).astype(np.float16)
    to_suv = pet_to_suv(pet_roi, settings["intensity_preset"]) if pet_roi is not None else (0.0, 1.0)
    if label is None:
        label_roi = np.zeros(grid.shape, dtype=np.uint8)
    else:
        values = np.clip(np.rint(label.array), 0, 255)
        label_roi = geometry.resample(values, label.grid, grid, order=0, cval=0).astype(np.uint8)
    return {"image": image, "label": label_roi, "ijk_to_ras": grid.ijk_to_ras, "center_ras": center,
            "pet_to_suv": np.array(to_suv, dtype=np.float64)}


def source_fingerprint(case: Case) -> str:
    parts = []
    for path in (case.ct, case.pet, case.label):
        if path is not None:
            stat = Path(path).stat()
            parts.append(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id)


def cache_folder(settings: dict, cache_dir=None) -> Path:
    root = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    return root / settings_hash(settings)


def _is_current(path: Path, fingerprint: str) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as stored:
            return str(stored["fingerprint"]) == fingerprint
    except (OSError, ValueError, KeyError):
        return False


def cache_case(case: Case, settings: dict, folder: Path) -> Path:
    """Preprocess one case into ``folder`` unless a current copy is there; return its path."""
    path = folder / f"{_safe_name(case.case_id)}.npz"
    fingerprint = source_fingerprint(case)
    if _is_current(path, fingerprint):
        return path
    arrays = preprocess_case(case, settings)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, case_id=np.array(case.case_id), fingerprint=np.array(fingerprint), **arrays)
    os.replace(tmp, path)  # atomic: concurrent builders (several nodes) never see half a file
    return path


def build_cache(cases, settings: dict, cache_dir=None, workers: int = 1) -> list[Path]:
    """Cache every case (in ``workers`` processes); returns the ``.npz`` paths in case order."""
    folder = cache_folder(settings, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    if workers <= 1 or len(cases) <= 1:
        paths = [cache_case(c, settings, folder) for c in cases]
    else:
        # spawn: safe after torch/CUDA initialisation in the parent
        with ProcessPoolExecutor(min(workers, len(cases)), mp_context=get_context("spawn")) as pool:
            paths = list(pool.map(cache_case, cases, [settings] * len(cases), [folder] * len(cases)))
    logger.info("cache ready: %d case(s) in %s", len(paths), folder)
    return paths


# ------------------------------------------------------------------------------------ dataset
class CachedDataset:
    """Map-style dataset over cached cases.

    An item is ``{"image": [C,k,j,i], "label": float32 [1,k,j,i] (1 where label ==
    label_value), "index": int, "seed": int, "pet_to_suv": (offset, scale)}`` (SUV = PET
    channel x scale + offset; :func:`~InteractiveRefineLib.intensity.pet_to_suv`). With a
    sequence of label values (several classes, :func:`~.config.label_values`) the label is
    ``[n_classes, k, j, i]``, channel c 1 where label == ``label_value[c]``. The key is a
    case index or ``(index, seed)``;
    with a ``transform`` (augmentation on the CPU, e.g. in DataLoader workers) the transform's
    random state is set from that per-sample seed, so the result does not depend on which
    worker or in which order a sample is loaded. Without one, the image stays float16.
    """

    def __init__(self, paths, label_value=1, transform=None):
        self.paths = [Path(p) for p in paths]
        if isinstance(label_value, (list, tuple)):
            self.label_value = tuple(int(v) for v in label_value)
        else:
            self.label_value = int(label_value)
        self.transform = transform

    def target(self, label: np.ndarray) -> np.ndarray:
        """The float32 training label of a cached uint8 label map: ``[1, ...]`` for one label
        value, ``[n_classes, ...]`` (one channel per class) for several."""
        if isinstance(self.label_value, tuple):
            return np.stack([label == value for value in self.label_value]).astype(np.float32)
        return (label == self.label_value).astype(np.float32)[None]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        with np.load(self.paths[index]) as stored:
            image = stored["image"]
            label = self.target(stored["label"])
            to_suv = np.asarray(stored["pet_to_suv"] if "pet_to_suv" in stored else (0.0, 1.0), float)
        if self.transform is not None:
            import torch

            from .augment import augment

            self.transform.set_random_state(seed=int(seed))
            image_t, label_t = augment(self.transform, torch.from_numpy(image.astype(np.float32)),
                                       torch.from_numpy(label))
            image, label = image_t.numpy(), label_t.numpy()
        return {"image": image, "label": label, "index": index, "seed": int(seed), "pet_to_suv": to_suv}
