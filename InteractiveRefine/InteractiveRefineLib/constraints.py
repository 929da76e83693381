"""Rules applied to every refinement's proposal, whatever refiner made it.

Region removal (:mod:`.click_regions`): a negative click on a separate region of the mask rejects
that whole region; once a positive click marks the tumour elsewhere, every rejected region that
neither holds nor touches a positive click is removed, on this and every later click.

With several output classes the mask is the union of the classes: a negative click rejects the
region of that union it lands on, any positive click (of any class) counts, and a removed region
is removed from every class.
"""
from __future__ import annotations

import numpy as np

from . import classes, click_regions, geometry


def rejections_after(rejections: tuple, previous_probability, threshold: float, index, positive: bool,
                     enabled: bool = True) -> tuple:
    """The rejected regions after a click at working-grid ``index``: a negative click adds the
    connected foreground region of the previous mask it lies in (if any)."""
    if not enabled or positive:
        return rejections
    region = click_regions.rejected_region(classes.foreground(previous_probability, threshold), index)
    return rejections if region is None else rejections + (region,)


def remove_rejected(probability: np.ndarray, rejections, indices, positives, previous_probability,
                    threshold: float) -> tuple:
    """Zero, in place, the rejected regions that the clicks now allow removing.

    Returns the bounding box of the voxels it changed (or None) and how many foreground voxels
    of the previous mask it removed (what disappears from the screen; a region the network
    predicts again after its removal is zeroed again without being counted).
    """
    if not rejections:
        return None, 0
    foreground = classes.foreground(probability, threshold)
    suppress = click_regions.suppressed(rejections, foreground, [i for i, p in zip(indices, positives) if p])
    if suppress is None:
        return None, 0
    if probability.ndim == 3:
        changed = suppress & (probability != 0)
        probability[suppress] = 0
    else:  # several classes: a rejected region is removed from every class
        changed = suppress & (probability != 0).any(0)
        probability[:, suppress] = 0
    seen = suppress & foreground & classes.foreground(previous_probability, threshold)
    return geometry.mask_box(changed), int(seen.sum())
