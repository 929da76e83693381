"""``metrics``: compare folders of predicted and ground-truth label masks, per label.

Cases are paired by the leading case id of the file name (the text before the first ``_`` or
``.``): ``77_midRT_mask.nii.gz`` and ``77_preRT_mask_registered.nii.gz`` are case ``"77"``.
Per case and label: Dice, HD95, ASSD and surface Dice at 1 mm (the engine's metrics, which
crop to the masks' neighbourhood, so 512x512x80 masks stay fast). Per label: the HECKTOR
aggregated Dice ``DSCagg = sum 2|G∩P| v / sum (|G|+|P|) v`` over cases (``v`` = voxel volume),
the mean per-case Dice and the mean HD95. Undefined values (an empty mask) are JSON ``null``.

Per-case Dice when the truth is empty: 0 if something was predicted, null when both are empty
(nothing to segment); ``dice_mean`` averages the non-null values, ``dice_mean_empty_as_zero``
counts every case with an empty truth as 0 (the HNTS-MRG 2024 organisers' convention).
"""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import numpy as np
from InteractiveRefineLib import geometry
from InteractiveRefineLib.geometry import read_volume
from InteractiveRefineLib.metrics import all_metrics, dice, json_number

logger = logging.getLogger(__name__)

_LEADING_ID = re.compile(r"^([^_.]+)")


def case_id_of(file_name: str) -> str:
    return _LEADING_ID.match(file_name).group(1)


def mask_files(folder: str | os.PathLike) -> dict:
    """``{case_id: path}`` of the NIfTI/NRRD/MHA files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"mask folder not found: {folder}")
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and re.search(r"\.(nii(\.gz)?|nrrd|mha)$", path.name):
            case_id = case_id_of(path.name)
            if case_id in files:
                raise ValueError(
                    f"two files in {folder} have case id {case_id!r}: {files[case_id].name}, {path.name}"
                )
            files[case_id] = path
    return files


def _aligned(prediction: geometry.Volume, truth: geometry.Volume) -> np.ndarray:
    """The prediction's labels on the truth grid (nearest neighbour when the grids differ)."""
    same = prediction.shape == truth.shape and np.allclose(prediction.ijk_to_ras, truth.ijk_to_ras, atol=1e-3)
    if same:
        return np.rint(prediction.array)
    logger.warning("prediction grid differs from the truth grid: resampling (nearest neighbour)")
    return np.rint(geometry.resample(prediction.array, prediction.grid, truth.grid, order=0, cval=0))


def class_metrics(prediction: np.ndarray, truth: np.ndarray, spacing_ijk, surface: bool = True) -> tuple:
    """Metrics of one class on one case (boolean masks on one grid): ``(metrics, (2|P∩T|,
    |P|+|T|))``, the sums in voxels (for DSCagg). Dice, and with ``surface`` HD95, ASSD and surface
    Dice at 1 mm (the engine's MONAI-based metrics); an empty truth gives Dice 0 when something
    was predicted, null (NaN) when both are empty. Values are JSON numbers (None for NaN)."""
    p, t = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    values = all_metrics(p, t, spacing_ijk) if surface else {"dice": dice(p, t)}
    if not t.any():
        values["dice"] = math.nan if not p.any() else 0.0
    sums = (2.0 * float(np.logical_and(p, t).sum()), float(p.sum()) + float(t.sum()))
    return {k: json_number(v) for k, v in values.items()}, sums


def dsc_agg(sums) -> float | None:
    """HECKTOR 2022's aggregated Dice of ``(2|P∩T|, |P|+|T|)`` pairs (any one unit, e.g. voxels x
    voxel volume): sum of the first over sum of the second; None when nothing was segmented or
    predicted in any case."""
    intersection = sum(float(a) for a, _ in sums)
    total = sum(float(b) for _, b in sums)
    return json_number(intersection / total) if total > 0 else None


def case_metrics(prediction: np.ndarray, truth: np.ndarray, spacing_ijk, labels) -> tuple[dict, dict]:
    """Per-label metrics of one case, and the per-label sums for DSCagg (in voxels)."""
    metrics, sums = {}, {}
    for label in labels:
        key = str(label)
        metrics[key], sums[key] = class_metrics(prediction == label, truth == label, spacing_ijk)
    return metrics, sums


def evaluate_folders(pred_dir, truth_dir, labels=(1, 2)) -> dict:
    """The ``metrics --json`` structure for every case present in both folders."""
    predictions, truths = mask_files(pred_dir), mask_files(truth_dir)
    common = sorted(set(predictions) & set(truths), key=_natural)
    for side, files in (("prediction", predictions), ("truth", truths)):
        unpaired = sorted(set(files) - set(common))
        if unpaired:
            logger.warning("%d %s file(s) without a partner: %s", len(unpaired), side, unpaired[:5])
    if not common:
        raise ValueError(f"no case id is present in both {pred_dir} and {truth_dir}")
    cases, totals = {}, {str(label): [0.0, 0.0] for label in labels}
    for case_id in common:
        truth = read_volume(truths[case_id])
        prediction = _aligned(read_volume(predictions[case_id]), truth)
        voxel = float(np.prod(truth.grid.spacing))
        cases[case_id], sums = case_metrics(prediction, np.rint(truth.array), truth.grid.spacing, labels)
        for label, (intersection, total) in sums.items():
            totals[label][0] += intersection * voxel
            totals[label][1] += total * voxel
    return {"cases": cases, "aggregate": _aggregate(cases, totals)}


def _aggregate(cases: dict, totals: dict) -> dict:
    out = {}
    for label, (intersection, total) in totals.items():
        dices = [c[label]["dice"] for c in cases.values() if c[label]["dice"] is not None]
        hd95s = [c[label]["hd95_mm"] for c in cases.values() if c[label]["hd95_mm"] is not None]
        out[label] = {
            "dsc_agg": json_number(intersection / total) if total > 0 else None,
            "dice_mean": json_number(float(np.mean(dices))) if dices else None,
            # the HNTS-MRG organisers' per-case mean: an empty truth counts as 0
            "dice_mean_empty_as_zero": json_number(float(np.mean(
                [c[label]["dice"] or 0.0 for c in cases.values()]))),
            "hd95_mm_mean": json_number(float(np.mean(hd95s))) if hd95s else None,
            "n_cases": len(cases),
        }
    return out


def _natural(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
