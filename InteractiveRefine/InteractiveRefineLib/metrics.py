"""Segmentation metrics in physical units (MONAI's surface-distance implementations).

All functions take boolean-like arrays ``[k, j, i]`` on one grid and ``spacing`` in mm as
``(i, j, k)`` (the :class:`~InteractiveRefineLib.geometry.Grid` convention).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .geometry import mask_box


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """DSC = 2|P∩T| / (|P| + |T|); 1.0 when both are empty."""
    p = np.asarray(prediction, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    denominator = int(p.sum()) + int(t.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / denominator


def _one_hot(mask: np.ndarray):
    import torch

    m = torch.from_numpy(np.asarray(mask, dtype=bool).astype(np.float32))
    return torch.stack([1 - m, m])[None]


def _kji_spacing(spacing_ijk) -> list[float]:
    return [float(s) for s in list(spacing_ijk)[::-1]]


def _surface_metric(prediction, truth, spacing_ijk, kind: str) -> float:
    p = np.asarray(prediction, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if not p.any() or not t.any():
        return math.nan
    spacing = _kji_spacing(spacing_ijk)
    # Surface distances only depend on the masks' neighbourhood: crop a 512x512x80 mask to it.
    box = mask_box(p | t, pad=2)
    y_pred, y = _one_hot(p[box]), _one_hot(t[box])
    with warnings.catch_warnings():  # MONAI 1.5 warns about its own deprecated internals
        warnings.simplefilter("ignore", FutureWarning)
        return _monai_metric(kind, y_pred, y, spacing)


def _monai_metric(kind, y_pred, y, spacing) -> float:
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    if kind == "hd95":
        value = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)
    elif kind == "assd":
        value = compute_average_surface_distance(y_pred, y, symmetric=True, spacing=spacing)
    else:
        value = compute_surface_dice(y_pred, y, class_thresholds=[1.0], spacing=spacing)
    return float(value.reshape(-1)[0])


def hd95(prediction, truth, spacing_ijk=(1.0, 1.0, 1.0)) -> float:
    """95th-percentile symmetric Hausdorff distance (mm); NaN when either mask is empty."""
    return _surface_metric(prediction, truth, spacing_ijk, "hd95")


def assd(prediction, truth, spacing_ijk=(1.0, 1.0, 1.0)) -> float:
    """Average symmetric surface distance (mm); NaN when either mask is empty."""
    return _surface_metric(prediction, truth, spacing_ijk, "assd")


def surface_dice(prediction, truth, spacing_ijk=(1.0, 1.0, 1.0)) -> float:
    """Surface Dice at 1 mm tolerance; NaN when either mask is empty."""
    return _surface_metric(prediction, truth, spacing_ijk, "surface_dice")


def all_metrics(prediction, truth, spacing_ijk=(1.0, 1.0, 1.0)) -> dict:
    """``dice``, ``hd95_mm``, ``assd_mm``, ``surface_dice_1mm`` (NaN where undefined)."""
    return {
        "dice": dice(prediction, truth),
        "hd95_mm": hd95(prediction, truth, spacing_ijk),
        "assd_mm": assd(prediction, truth, spacing_ijk),
        "surface_dice_1mm": surface_dice(prediction, truth, spacing_ijk),
    }


def json_number(value: float):
    """NaN/inf are not JSON: report them as ``None``."""
    return None if value is None or not math.isfinite(value) else float(value)
