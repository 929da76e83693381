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
- ``"hnuiseg"`` (HN-UISeg stages 1 and 3: per class, per connected component; deterministic): the
  errors of each class c are its false negatives (truth c, predicted otherwise) and its false
  positives (predicted c, truth otherwise), each split into 26-connected components; the click
  goes to the innermost voxel (largest Euclidean distance to the component's border; the first in
  C order on a tie) of the largest component over all classes (the first class, false negatives
  before false positives, on a tie).
- ``"suggest"`` ("click here next" as the user; :class:`SuggestUser`, built by :func:`make_user`):
  every click goes to the engine's suggested next click (:func:`.uncertainty.suggest`, the centre
  of the most uncertain region not clicked yet, from an N-pass :func:`.uncertainty.estimate` of the
  current state seeded from the run's seed and the step), its sign read from the truth there; with
  no suggestion, the ``"2sicr"`` user's click for that step (counted in ``fallbacks``). It needs
  the refinement session, so the training loop cannot use it.

Multi-class (GTVp, GTVn, ...): prediction and truth are integer class maps, 0 = background and
c + 1 = class index c (``labels``: the label values of the classes in order when they differ from
1..C). The error is prediction != truth; a click is positive with the true class where the truth
is a class (``SimulatedClick.label`` its index) and negative where the truth is background.
Boolean arrays, and maps with no value above 1 (without ``labels``), are the one-class case
(``label`` None, which a session reads as the first class), exactly as before.

Randomness comes only from the injected ``numpy.random.Generator``, so fixed seeds reproduce.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InteractiveRefineError
from .geometry import mask_box

SIMULATED_USER_PRESETS = ("2sicr", "deepgrow", "deepedit", "hnuiseg", "suggest")
#: The presets that need the refinement session, not only prediction and truth (:func:`make_user`).
SESSION_USER_PRESETS = ("suggest",)

#: 26-connectivity for the error components of the ``hnuiseg`` preset.
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class SimulatedClick:
    """A sampled click: voxel index ``(k, j, i)`` on the grid it was sampled on, its sign and, on
    class maps, the class index of a positive click (None: one class, or a negative click)."""

    index: tuple[int, int, int]
    positive: bool
    label: int | None = None


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


def _innermost_of_largest(prediction: np.ndarray, truth: np.ndarray) -> tuple | None:
    """The ``hnuiseg`` click's voxel: the innermost voxel of the largest per-class false-negative
    or false-positive component (class maps; None without error)."""
    best = None  # (size, index)
    for value in sorted((set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist())) - {0}):
        for error in ((truth == value) & (prediction != value), (prediction == value) & (truth != value)):
            box = mask_box(error, pad=1)
            if box is None:
                continue
            components, count = ndimage.label(error[box], structure=_STRUCTURE)
            sizes = np.bincount(components.ravel())[1:]
            for number in np.flatnonzero(sizes == sizes.max()) + 1 if count else ():
                if best is not None and sizes[number - 1] <= best[0]:
                    continue
                distance = ndimage.distance_transform_edt(np.pad(components == number, 1))[1:-1, 1:-1, 1:-1]
                local = np.unravel_index(int(np.argmax(distance)), distance.shape)
                best = (int(sizes[number - 1]), tuple(int(v + s.start) for v, s in zip(local, box)))
    return None if best is None else best[1]


class SimulatedUser:
    """Chooses the next click from a prediction and the truth (both boolean ``[k, j, i]``, or
    both integer class maps for several classes: 0 background, c + 1 class c).

    ``labels``: the label values of the classes in order, when the maps hold card label values
    that are not 1..C (they are mapped to class numbers first); None: 1..C."""

    def __init__(self, preset: str = "2sicr", rng: np.random.Generator | None = None, labels=None):
        if preset not in SIMULATED_USER_PRESETS:
            raise InteractiveRefineError(
                f"unknown simulated-user preset {preset!r}; expected one of {SIMULATED_USER_PRESETS}"
            )
        if preset in SESSION_USER_PRESETS:
            raise InteractiveRefineError(
                f"the {preset!r} simulated user needs the refinement session: build it with make_user"
            )
        self.preset = preset
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.labels = None if labels is None else tuple(int(v) for v in labels)

    def _maps(self, prediction, truth) -> tuple:
        """``(prediction, truth, classes)``: bool arrays (one class) or uint8 class maps."""
        prediction, truth = np.asarray(prediction), np.asarray(truth)
        if prediction.shape != truth.shape:
            raise InteractiveRefineError(
                f"prediction shape {prediction.shape} does not match truth shape {truth.shape}"
            )
        if self.labels is None and (truth.dtype == bool or prediction.dtype == bool or max(
                float(truth.max(initial=0)), float(prediction.max(initial=0))) <= 1):
            return prediction.astype(bool), truth.astype(bool), False  # one class (as before)
        if self.labels is not None:
            from .classes import labels_of

            return labels_of(prediction, self.labels), labels_of(truth, self.labels), True
        return prediction.astype(np.int64), truth.astype(np.int64), True

    def probabilities(self, prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Click probability of every voxel (sums to 1, zero outside the chosen error region);
        for ``hnuiseg``, 1 at its one voxel."""
        prediction, truth, _ = self._maps(prediction, truth)
        return self._weights(prediction, truth)

    def _weights(self, prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
        if self.preset == "hnuiseg":
            weights = np.zeros(truth.shape, dtype=np.float64)
            index = _innermost_of_largest(prediction, truth)
            if index is not None:
                weights[index] = 1.0
        elif self.preset == "2sicr":
            error = prediction != truth
            weights = _distance(error, "euclidean")
        else:
            false_neg = (truth != 0) & (prediction != truth)
            false_pos = (prediction != 0) & (truth == 0)
            if self.preset == "deepedit":
                false_pos = _remove_small_blobs(false_pos, 50)
            region = false_neg if false_neg.sum() >= false_pos.sum() else false_pos
            distance = _distance(region, "chessboard")
            weights = np.where(region, np.expm1(np.minimum(distance, 700.0)), 0.0)
        total = weights.sum()
        return weights / total if total > 0 else weights

    def next_click(self, prediction: np.ndarray, truth: np.ndarray) -> SimulatedClick | None:
        """Sample one click, or ``None`` when the prediction has no error left."""
        prediction, truth, multi = self._maps(prediction, truth)
        if self.preset == "hnuiseg":  # deterministic: no draw from the generator
            index = _innermost_of_largest(prediction, truth)
        else:
            index = _sample(self._weights(prediction, truth), self.rng)
        if index is None:
            return None
        value = int(truth[index])
        label = value - 1 if multi and value else None
        return SimulatedClick(index=index, positive=bool(value), label=label)


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s uncertainty estimate in a run seeded with ``seed``."""
    return int(np.random.SeedSequence((int(seed), int(step))).generate_state(1)[0])


class SuggestUser:
    """The ``"suggest"`` preset: clicks where the session suggests the next click, signed by the
    truth (positive, with the true class, where the truth is a class; negative elsewhere).

    Each :meth:`next_click` estimates the session's current state's uncertainty (``passes``
    passes, seed :func:`step_seed` of ``seed`` and the step) and clicks the suggestion's voxel.
    Where there is none (nothing uncertain that no click lies in yet) or it lies outside
    ``inside`` (the voxels the user can click; None: those inside the CT), the ``"2sicr"`` user
    seeded with ``seed`` clicks instead; ``fallback_steps`` lists those steps. Like every preset it
    stops (None) when the prediction has no error left."""

    preset = "suggest"

    def __init__(self, session, seed: int = 0, passes: int | None = None, inside=None, labels=None):
        from .uncertainty import DEFAULT_PASSES

        self.session, self.seed = session, int(seed)
        self.passes = DEFAULT_PASSES if passes is None else int(passes)
        if inside is None:
            from .geometry import inside_mask

            inside = inside_mask(session.ct.grid, session.grid)
        self.inside = np.asarray(inside, dtype=bool)
        self.fallback = SimulatedUser("2sicr", np.random.default_rng(self.seed), labels)
        self.step = 0
        self.fallback_steps: list[int] = []
        self.seconds: list[float] = []  #: each estimate's wall seconds

    def next_click(self, prediction: np.ndarray, truth: np.ndarray) -> SimulatedClick | None:
        from .uncertainty import estimate

        mapped, classes, multi = self.fallback._maps(prediction, truth)
        if not (mapped != classes).any():
            return None
        self.step += 1
        result = estimate(self.session, self.passes, seed=step_seed(self.seed, self.step))
        self.seconds.append(result.seconds)
        suggestion = result.suggestion
        if suggestion is None or not self.inside[suggestion.index]:
            self.fallback_steps.append(self.step)
            return self.fallback.next_click(prediction, truth)
        index = tuple(int(v) for v in suggestion.index)
        value = int(classes[index])
        return SimulatedClick(index=index, positive=bool(value), label=value - 1 if multi and value else None)

    def summary(self) -> dict:
        """What the run's JSON records: passes, the fallback clicks, and the estimates' seconds."""
        return {"passes": self.passes, "fallback_clicks": len(self.fallback_steps),
                "fallback_steps": list(self.fallback_steps),
                "uncertainty_seconds": [round(s, 3) for s in self.seconds]}


def make_user(preset: str = "2sicr", seed: int = 0, session=None, passes: int | None = None,
              inside=None, labels=None):
    """The simulated user of ``preset`` seeded with ``seed``: a :class:`SimulatedUser`, or for the
    presets that need the session (``"suggest"``) a :class:`SuggestUser` on ``session`` with
    ``passes`` passes per estimate (None: the engine's default) clicking inside ``inside``."""
    if preset in SESSION_USER_PRESETS:
        if session is None:
            raise InteractiveRefineError(f"the {preset!r} simulated user needs the refinement session")
        return SuggestUser(session, seed, passes, inside, labels)
    return SimulatedUser(preset, np.random.default_rng(seed), labels)
