"""Output classes (GTVp, GTVn, ...): probabilities, label maps and the class of each click.

A card with one output keeps today's arrays: a probability ``[k, j, i]`` and a 0/1 mask. With C > 1
outputs (one sigmoid per class, :mod:`.card`) a probability is ``[C, k, j, i]`` (channel c: class
c) and a mask is a *label map*: 0 for background, else the card label of the class with the highest
probability among the classes above the threshold (the same ``>`` rule as one class, so a
one-class label map equals today's mask bit for bit).

A click's ``label`` is an output name (:class:`.clicks.Click`); the inputs and refiners take the
class *index* per click (0 .. C-1; None on a positive click is class 0, and a negative click is
"not any class", its index unused).
"""
from __future__ import annotations

import numpy as np

from .errors import ClickError


def n_classes(probability) -> int:
    """The classes of a probability array: 1 for ``[k, j, i]``, C for ``[C, k, j, i]``."""
    return 1 if probability.ndim == 3 else int(probability.shape[0])


def foreground(probability, threshold: float):
    """Voxels above ``threshold`` in any class (bool ``[k, j, i]``; numpy or torch)."""
    above = above_threshold(probability, threshold)
    return above if probability.ndim == 3 else above.any(0)


#: float16 bit patterns: +inf, and the ordering of the non-negative values (their bits, as integers)
_FLOAT16_INF_BITS = 0x7C00


def above_threshold(array, threshold: float):
    """``array > threshold``; for a float16 numpy array (the history's probabilities) and a
    threshold >= 0 computed on the bit patterns, the same answer ten times faster: non-negative
    float16 values order as their bits do, and negative values, -0 and NaN (bits above +inf's)
    are never above a non-negative threshold."""
    if isinstance(array, np.ndarray) and array.dtype == np.float16 and threshold >= 0:
        bits = array.view(np.uint16)
        return (bits > np.float16(threshold).view(np.uint16)) & (bits <= _FLOAT16_INF_BITS)
    return array > threshold


def label_map(probability, threshold: float, labels=(1,)) -> np.ndarray:
    """uint8 ``[k, j, i]``: 0 where no class is above ``threshold``, else the label (``labels``,
    in class order) of the most probable class among those above it (the first on a tie).
    A ``[k, j, i]`` probability (one class) gives today's 0/1 mask."""
    probability = np.asarray(probability)
    if probability.ndim == 3:  # one class: today's 0/1 mask, whatever its label
        return above_threshold(probability, threshold).astype(np.uint8)
    above = above_threshold(probability, threshold)
    scores = np.where(above, probability.astype(np.float32), -1.0)
    best = np.argmax(scores, axis=0)
    values = np.asarray(labels, dtype=np.uint8)[best]
    return np.where(above.any(0), values, 0).astype(np.uint8)


def class_index(names, label) -> int:
    """The class index of the output name ``label`` among ``names`` (None: 0); :class:`ClickError`
    naming the model's classes when it has no such output."""
    if label is None:
        return 0
    names = tuple(names)
    if label not in names:
        raise ClickError(f"unknown class {label!r}: this model segments {list(names)}")
    return names.index(label)


def click_classes(clicks, names) -> tuple:
    """Per click, its class index (:func:`class_index`; 0 for a negative click without label)."""
    return tuple(class_index(names, getattr(click, "label", None)) for click in clicks)


def labels_of(values, labels) -> np.ndarray:
    """A label map (card label values) as class numbers: 0 background, c + 1 for class c (values
    that are no class's label count as background)."""
    values = np.asarray(values)
    out = np.zeros(values.shape, dtype=np.uint8)
    for c, label in enumerate(labels):
        out[values == label] = c + 1
    return out
