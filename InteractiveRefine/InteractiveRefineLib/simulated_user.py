"""The simulated user: the one implementation behind ``simulate``, evaluation and training.

Presets (say in the model card which one a model was trained and evaluated with):

- ``"2sicr"`` (default; 2S-ICR paper section 4.2): the error region is prediction != truth;
  every error voxel's Euclidean distance to the border of the error region, normalised to sum
  to 1, is its probability. The click is positive when the sampled voxel is missed tumour,
  negative when it is a false positive.
- ``"deepgrow"`` (MONAI ``monai.apps.deepgrow``): one click per round, from the false negatives
  when |FN| >= |FP| else from the false positives; probability proportional to exp(d) - 1 where
  d is the chessboard distance (``scipy.ndimage.distance_transform_cdt``).
- ``"deepedit"`` (MONAI ``monai.apps.deepedit``): as deepgrow, but false-positive blobs of 50
  voxels or fewer are ignored.

Randomness comes only from the injected ``numpy.random.Generator``, so fixed seeds reproduce.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InteractiveRefineError
from .geometry import mask_box

SIMULATED_USER_PRESETS = ("2sicr", "deepgrow", "deepedit")


@dataclass(frozen=True)
class SimulatedClick:
    """A sampled click: voxel index ``(k, j, i)`` on the grid it was sampled on, and its sign."""

    index: tuple[int, int, int]
    positive: bool


def _sample(weights: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int] | None:
    flat = weights.ravel()
    total = float(flat.sum(dtype=np.float64))
    if total <= 0:
        return None
    cumulative = np.cumsum(flat, dtype=np.float64)
    position = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
    position = min(position, flat.size - 1)
    return tuple(int(v) for v in np.unravel_index(position, weights.shape))


def _distance(region: np.ndarray, metric: str) -> np.ndarray:
    """Distance of every region voxel to the region's border (0 outside), computed in its box.

    A distance transform of a region only needs the region plus a one-voxel ring of background:
    any farther background voxel is behind that ring, so cropping gives the exact same distances
    while the transform shrinks from the whole ROI to the size of the error.
    """
    out = np.zeros(region.shape, dtype=np.float64)
    box = mask_box(region, pad=1)
    if box is None:
        return out
    if metric == "euclidean":
        out[box] = ndimage.distance_transform_edt(region[box])
    else:
        out[box] = ndimage.distance_transform_cdt(region[box], metric="chessboard")
    return out


def _remove_small_blobs(mask: np.ndarray, max_voxels: int) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes > max_voxels
    keep[0] = False
    return keep[labels]


class SimulatedUser:
    """Chooses the next click from a prediction and the truth (both boolean ``[k, j, i]``)."""

    def __init__(self, preset: str = "2sicr", rng: np.random.Generator | None = None):
        if preset not in SIMULATED_USER_PRESETS:
            raise InteractiveRefineError(
                f"unknown simulated-user preset {preset!r}; expected one of {SIMULATED_USER_PRESETS}"
            )
        self.preset = preset
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def probabilities(self, prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Click probability of every voxel (sums to 1, zero outside the chosen error region)."""
        prediction = np.asarray(prediction, dtype=bool)
        truth = np.asarray(truth, dtype=bool)
        if prediction.shape != truth.shape:
            raise InteractiveRefineError(
                f"prediction shape {prediction.shape} does not match truth shape {truth.shape}"
            )
        if self.preset == "2sicr":
            error = prediction != truth
            weights = _distance(error, "euclidean")
        else:
            false_neg = truth & ~prediction
            false_pos = prediction & ~truth
            if self.preset == "deepedit":
                false_pos = _remove_small_blobs(false_pos, 50)
            region = false_neg if false_neg.sum() >= false_pos.sum() else false_pos
            distance = _distance(region, "chessboard")
            weights = np.where(region, np.expm1(np.minimum(distance, 700.0)), 0.0)
        total = weights.sum()
        return weights / total if total > 0 else weights

    def next_click(self, prediction: np.ndarray, truth: np.ndarray) -> SimulatedClick | None:
        """Sample one click, or ``None`` when the prediction has no error left."""
        weights = self.probabilities(prediction, truth)
        index = _sample(weights, self.rng)
        if index is None:
            return None
        return SimulatedClick(index=index, positive=bool(np.asarray(truth, dtype=bool)[index]))
