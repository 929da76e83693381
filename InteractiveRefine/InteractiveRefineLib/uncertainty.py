"""Where the model is unsure: MC dropout plus test-time augmentation, and "click here next".

HN-UISeg (section 2.4): N forward passes, each with one random test-time augmentation (Gaussian
noise on the image channels, a flip along one axis, or a rotation of up to 5 degrees about one
axis), mapped back to the working grid; where the network has dropout layers (a card trained with
``network.dropout``) they stay active, so the passes also sample the weights. The mean of the
passes is the prediction and its predictive entropy (nats, 0 where every pass says exactly 0 or
1, at most ln 2) is the uncertainty map. The passes run on the input that produced the current
state (the initial model's for step 0, else the refine stage with the previous state and the
current clicks), in float32.

Several output classes (GTVp, GTVn; one sigmoid each): the mean is ``[C, k, j, i]`` and the
entropy the sum over the classes of each class's binary entropy of the mean (at most C ln 2).

:func:`suggest` offers the next click: the centre of the connected region of high entropy with the
most entropy in it that no click lies in yet, about the class with the highest mean probability
there (``Suggestion.label``), signed by that class's mean prediction. It is a suggestion for the
user to accept or flip, never applied by itself.

How good the map is, against a ground truth: :func:`calibration` (:func:`expected_calibration_error`
of the mean probability, and :func:`error_detection_auc`, the ROC AUC of the entropy as a detector
of the misclassified voxels).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from . import classes
from .errors import SessionStateError
from .inputs import InputContext, assemble
from .refiners import refine_stage

#: Passes per estimate (HN-UISeg's N; each costs one network pass).
DEFAULT_PASSES = 8
#: Gaussian noise (standard deviation, in normalised intensity units) on the image channels.
NOISE_SD = 0.05
#: The largest rotation (degrees).
MAX_ROTATION_DEG = 5.0
#: Entropy (nats) above which a voxel counts as uncertain for :func:`suggest` (half of ln 2).
UNCERTAIN_NATS = 0.5 * float(np.log(2.0))
#: Equal-width bins of the mean probability for :func:`expected_calibration_error`.
ECE_BINS = 15


@dataclass(frozen=True)
class Suggestion:
    """A suggested click: RAS mm, working-grid index ``(k, j, i)``, sign from the mean
    prediction, and the entropy (summed, nats) and volume (mL) of its uncertain region.
    ``label``: the class it is about (an output name: the class with the highest mean
    probability there; pass it on as ``add_click(..., label=)``)."""

    ras: tuple
    index: tuple
    positive: bool
    entropy_sum: float
    volume_ml: float
    label: str | None = None


@dataclass(frozen=True)
class Uncertainty:
    """``mean`` and ``entropy`` (float32 ``[k, j, i]`` on the working grid), the augmentation of
    each pass, the seconds it took and the suggested next click (or None)."""

    mean: np.ndarray
    entropy: np.ndarray
    augmentations: tuple
    seconds: float
    suggestion: Suggestion | None

    def summary(self) -> dict:
        out = {"passes": len(self.augmentations), "seconds": round(self.seconds, 3),
               "max_entropy_nats": round(float(self.entropy.max()), 4),
               "uncertain_voxels": int((self.entropy > UNCERTAIN_NATS).sum()), "suggestion": None}
        if self.suggestion is not None:
            s = self.suggestion
            out["suggestion"] = {"ras": [round(float(v), 2) for v in s.ras], "positive": s.positive,
                                 "entropy_sum": round(s.entropy_sum, 3), "volume_ml": round(s.volume_ml, 3),
                                 "label": s.label}
        return out


def predictive_entropy(mean: np.ndarray) -> np.ndarray:
    """Binary predictive entropy (nats) of a mean foreground probability; exactly 0 at 0 and 1.
    Several classes (a 4-D ``[C, k, j, i]``, one sigmoid each): the sum over the classes of each
    class's binary entropy (``[k, j, i]``, at most C ln 2); any other shape is one class."""
    from scipy.special import xlogy

    p = np.clip(np.asarray(mean, dtype=np.float64), 0.0, 1.0)
    entropy = -(xlogy(p, p) + xlogy(1.0 - p, 1.0 - p))
    return (entropy.sum(axis=0) if entropy.ndim == 4 else entropy).astype(np.float32)


def estimate(session, passes: int = DEFAULT_PASSES, seed: int = 0) -> Uncertainty:
    """The uncertainty of ``session``'s current state from ``passes`` augmented passes
    (deterministic for a seed). The session is not changed."""
    import torch

    if int(passes) < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if session.image is None or not len(session.history):
        raise SessionStateError("no segmentation yet: run the initial segmentation first")
    state = session.history.current
    t0 = time.perf_counter()
    stage, x = _input(session)
    rng = np.random.default_rng(seed)
    # the noise goes on the images given: a zero-filled PET (CT-only input) stays zero, as in training
    image_channels = [stage.slices()[name] for name in session.card.image_channels
                      if name != "pet" or session.image.pet is not None]
    total, augmentations = None, []
    with _dropout_active(session.backend.networks[stage.name]):
        for _ in range(int(passes)):
            augmentation = _draw(rng)
            augmented = _augment(x, augmentation, image_channels)
            predicted = session.backend.predict(stage.name, augmented, exact=True)
            probability = _restore(torch.from_numpy(predicted.astype(np.float32)), augmentation)
            total = probability if total is None else total + probability
            augmentations.append(augmentation)
    mean = (total / len(augmentations)).numpy()
    entropy = predictive_entropy(mean)
    suggestion = suggest(session, mean, entropy, state.click_indices)
    return Uncertainty(mean, entropy, tuple(augmentations), time.perf_counter() - t0, suggestion)


def _input(session):
    """``(stage, input)``: what produced the current state."""
    history = session.history
    image = session.image.on(session.device)
    if session.step == 0:
        return session.card.stages["initial"], image.tensor
    state, previous = history.current, history[len(history) - 2]
    positives = tuple(c.positive for c in state.clicks)
    labels = classes.click_classes(state.clicks, session.card.classes)
    ctx = InputContext(image, previous.probability, state.click_indices, positives, None, labels)
    stage = session.card.stages[refine_stage(session.card, positives, session.image.roi_placement)]
    return stage, assemble(stage, ctx, tuple(slice(0, n) for n in session.grid.shape))


def _draw(rng) -> tuple:
    kind = ("noise", "flip", "rotate")[int(rng.integers(3))]
    if kind == "noise":
        return ("noise", int(rng.integers(2**31)))
    if kind == "flip":
        return ("flip", int(rng.integers(3)))
    return ("rotate", int(rng.integers(3)), float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)))


def _augment(x, augmentation, image_channels):
    import torch

    kind = augmentation[0]
    if kind == "noise":
        x = x.clone()
        noise_generator = torch.Generator().manual_seed(augmentation[1])
        for channels in image_channels:
            part = x[:, channels]
            noise = torch.randn(part.shape, generator=noise_generator).to(part.device)
            x[:, channels] = part + NOISE_SD * noise
        return x
    if kind == "flip":
        return torch.flip(x, dims=(2 + augmentation[1],))
    return _rotate(x, augmentation[1], augmentation[2])


def _restore(probability, augmentation):
    """A pass's probability ``[k, j, i]`` (or ``[C, k, j, i]``) mapped back to the unaugmented grid."""
    import torch

    first = probability.ndim - 3  # the spatial axes come last
    if augmentation[0] == "flip":
        return torch.flip(probability, dims=(first + augmentation[1],))
    if augmentation[0] == "rotate":
        batch = probability[None, None] if first == 0 else probability[None]
        rotated = _rotate(batch, augmentation[1], -augmentation[2])
        return rotated[0, 0] if first == 0 else rotated[0]
    return probability


def _rotate(x, axis: int, degrees: float):
    """``x`` ``[1, C, k, j, i]`` rotated by ``degrees`` about the voxel axis ``axis`` (0 = k) around
    the grid's centre (trilinear, zeros outside)."""
    import torch

    angle = np.deg2rad(degrees)
    c, s = float(np.cos(angle)), float(np.sin(angle))
    plane = [a for a in range(3) if a != axis]  # the two axes that turn, in (k, j, i) order
    theta = torch.eye(3, 4, dtype=torch.float32)
    # affine_grid's coordinates are (x, y, z) = (i, j, k): axis a of (k, j, i) is column 2 - a.
    u, v = 2 - plane[0], 2 - plane[1]
    theta[u, u], theta[u, v], theta[v, u], theta[v, v] = c, -s, s, c
    grid = torch.nn.functional.affine_grid(theta[None].to(x.device), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)


@contextlib.contextmanager
def _dropout_active(networks):
    """Dropout layers in training mode while inside (MC dropout); none: nothing changes."""
    import torch

    dropout = torch.nn.modules.dropout._DropoutNd
    layers = [m for net in networks for m in net.modules() if isinstance(m, dropout)]
    for layer in layers:
        layer.train()
    try:
        yield
    finally:
        for layer in layers:
            layer.eval()


def suggest(session, mean: np.ndarray, entropy: np.ndarray, clicked=()) -> Suggestion | None:
    """The next click: in the connected region of entropy above :data:`UNCERTAIN_NATS` holding
    the most entropy and no click yet, the region voxel nearest its entropy-weighted centroid;
    about the class with the highest mean probability there (``label``), positive when that
    mean is foreground. None when nothing is uncertain."""
    from scipy import ndimage

    labels, count = ndimage.label(entropy > UNCERTAIN_NATS, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return None
    taken = {int(labels[tuple(index)]) for index in clicked} - {0}
    sums = ndimage.sum(entropy, labels, index=np.arange(1, count + 1))
    order = [int(i) + 1 for i in np.argsort(-sums) if int(i) + 1 not in taken]
    if not order:
        return None
    region = labels == order[0]
    voxels = np.argwhere(region)
    weights = entropy[region]
    centroid = (voxels * weights[:, None]).sum(axis=0) / weights.sum()
    index = tuple(int(v) for v in voxels[np.argmin(((voxels - centroid) ** 2).sum(axis=1))])
    ras = session.grid.index_to_ras(np.array(index[::-1], dtype=float))
    voxel_ml = float(np.prod(session.grid.spacing)) / 1000.0
    values = mean[index] if mean.ndim == 3 else mean[(slice(None),) + index]
    best = int(np.argmax(np.atleast_1d(values)))
    return Suggestion(tuple(float(v) for v in ras), index,
                      bool(np.atleast_1d(values)[best] >= session.card.threshold),
                      float(sums[order[0] - 1]), float(region.sum()) * voxel_ml, session.card.classes[best])


# ------------------------------------------------------------------------ calibration
def _voxels(name: str, values, shape, mask) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape} (the probability's)")
    return array[mask] if mask is not None else array.ravel()


def _checked(probability, truth, mask) -> tuple:
    """``(probability, truth, mask)`` as flat float64 / bool arrays over the voxels of ``mask``."""
    p = np.asarray(probability, dtype=np.float64)
    if mask is not None:
        mask = _voxels("mask", mask, p.shape, None).reshape(p.shape).astype(bool)
    y = _voxels("truth", truth, p.shape, mask).astype(bool)
    p = _voxels("probability", p, p.shape, mask)
    if p.size == 0:
        raise ValueError("no voxels to measure (an empty array or mask)")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must be finite numbers in [0, 1]")
    return p, y, mask


def expected_calibration_error(probability, truth, bins: int = ECE_BINS, mask=None) -> float:
    """Expected calibration error of a foreground ``probability`` against a binary ``truth``:
    ``sum_b n_b / N * |mean truth_b - mean probability_b|`` over ``bins`` equal-width bins of the
    probability on [0, 1] (the last bin closed), over the voxels of ``mask`` (default all).
    0 for a calibrated map; up to 1 for a confident and wrong one."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    p, y, _ = _checked(probability, truth, mask)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.bincount(index, weights=y.astype(np.float64), minlength=bins) - np.bincount(
        index, weights=p, minlength=bins)
    return float(np.abs(gap).sum() / p.size)


def error_detection_auc(uncertainty, errors, mask=None) -> float | None:
    """ROC AUC of ``uncertainty`` as a detector of the ``errors`` (bool, e.g. misclassified
    voxels), over the voxels of ``mask``: the chance that an error voxel is more uncertain than a
    correct one (ties count half; rank-based, Mann-Whitney). 1: the most uncertain voxels are
    exactly the errors; 0.5: no better than chance. None when no voxel or every voxel is an error."""
    from scipy.stats import rankdata

    u = np.asarray(uncertainty, dtype=np.float64)
    if mask is not None:
        mask = _voxels("mask", mask, u.shape, None).reshape(u.shape).astype(bool)
    e = _voxels("errors", errors, u.shape, mask).astype(bool)
    u = _voxels("uncertainty", u, u.shape, mask)
    if not np.all(np.isfinite(u)):
        raise ValueError("uncertainty values must be finite")
    positives, negatives = int(e.sum()), int(e.size - e.sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(u)  # ties get their average rank
    return float((ranks[e].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def calibration(mean, entropy, truth, threshold: float = 0.5, mask=None, bins: int = ECE_BINS) -> dict:
    """How well an estimate (:func:`estimate`'s ``mean`` and ``entropy``) knows its errors against
    the binary ``truth`` on the same grid: ``ece`` (:func:`expected_calibration_error` of the
    mean), ``error_auc`` (:func:`error_detection_auc` of the entropy for the voxels the mean
    gets wrong at ``threshold``; None without errors), and the voxel and error counts."""
    p, y, mask = _checked(mean, truth, mask)
    errors = (p >= threshold) != y
    return {
        "ece": expected_calibration_error(p, y, bins),
        "error_auc": error_detection_auc(_voxels("entropy", entropy, np.shape(mean), mask), errors),
        "voxels": int(p.size),
        "error_voxels": int(errors.sum()),
    }

