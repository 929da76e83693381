"""Rules applied to every refinement's proposal, whatever refiner made it.

Region removal (:mod:`.click_regions`): a negative click on a separate region of the mask rejects
that whole region; once a positive click marks the tumour elsewhere, every rejected region that
neither holds a positive click, nor lies within one's reach, nor touches a region of the mask
holding one is removed, on this and every later click.

With several output classes the mask is the union of the classes: a negative click rejects the
region of that union it lands on, any positive click (of any class) counts, and a removed region
is removed from every class.

Local edits (:func:`keep_connected_changes`, a card's ``local_edits_after_threshold``): once the
mask is a PET threshold region, a network click keeps only the changes connected to itself; with
``local_edits_positive_clicks``, every positive network click does.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import classes, click_regions, geometry


def rejections_after(rejections: tuple, previous_probability, threshold: float, index, positive: bool,
                     enabled: bool = True, arrays=None) -> tuple:
    """The rejected regions after a click at working-grid ``index``: a negative click adds the
    connected foreground region of the previous mask it lies in (if any). ``arrays``: where the
    regions are found (:func:`.click_regions.arrays_for`; None: on the host)."""
    if not enabled or positive:
        return rejections
    arrays = arrays or click_regions.HostArrays()
    region = click_regions.rejected_region(arrays.foreground(previous_probability, threshold), index)
    return rejections if region is None else rejections + (region,)


def remove_rejected(probability: np.ndarray, rejections, indices, positives, previous_probability,
                    threshold: float, arrays=None) -> tuple:
    """Zero, in place, the rejected regions that the clicks now allow removing.

    Returns the bounding box of the voxels it changed (or None) and how many foreground voxels
    of the previous mask it removed (what disappears from the screen; a region the network
    predicts again after its removal is zeroed again without being counted). ``arrays``: where
    the regions are computed (None: on the host); only the changed box's mask reaches the host.
    """
    if not rejections:
        return None, 0
    arrays = arrays or click_regions.HostArrays()
    foreground = arrays.foreground(probability, threshold)
    suppress = click_regions.suppressed(rejections, foreground, [i for i, p in zip(indices, positives) if p])
    if suppress is None:
        return None, 0
    changed = suppress & arrays.foreground(probability, 0.0)  # probabilities are >= 0: != 0 in any class
    box = geometry.mask_box(changed)
    if box is None:
        return None, 0
    seen = int((changed & foreground & arrays.foreground(previous_probability, threshold)).sum())
    zero = click_regions.like(suppress[box], probability)
    if probability.ndim == 3:
        probability[box][zero] = 0
    else:  # several classes: a rejected region is removed from every class
        probability[(slice(None),) + box][:, zero] = 0
    return box, seen


#: The command-line help of ``--[no-]local-edits`` (engine CLI, evaluate, threshold_floor.py).
LOCAL_EDITS_HELP = ("once the mask is a PET threshold region, a model click keeps only the changes connected "
                    "to it (default: as the model card says, local_edits_after_threshold)")
#: The command-line help of ``--[no-]local-edits-positive``.
LOCAL_EDITS_POSITIVE_HELP = ("every positive model click keeps only the changes connected to it "
                             "(default: as the model card says, local_edits_positive_clicks)")


def keep_connected_changes(probability: np.ndarray, previous: np.ndarray, index, threshold: float,
                           changed=None):
    """Reset, in place, the changes of ``probability`` from ``previous`` that do not connect to
    the click at working-grid ``index``: the mask's changed voxels (any class's foreground gained
    or lost) form connected regions (26-connectivity); those that come within the click's reach
    (:data:`.click_regions.CLICK_REACH_VOX`) are the click's edit, the others go back to
    ``previous`` (every class). So a click on one error of a good mask (a PET threshold region)
    cannot undo a correct part of it elsewhere. ``changed``: the box the proposal may differ in
    (a window; None: anywhere), the only part compared. Returns the bounding box of the reset
    voxels, or None."""
    region = tuple(slice(0, n) for n in probability.shape[-3:]) if changed is None else tuple(changed)
    inside = (Ellipsis,) + region
    change = (classes.foreground(probability[inside], threshold)
              != classes.foreground(previous[inside], threshold))
    found = geometry.mask_box(change)
    if found is None:
        return None
    box = tuple(slice(r.start + f.start, r.start + f.stop) for r, f in zip(region, found))
    change = change[found]
    labels, _ = ndimage.label(change, structure=np.ones((3, 3, 3), dtype=bool))
    near = click_regions.near([c - s.start for c, s in zip(index, box)], labels.shape)
    kept = np.unique(labels[near])
    reset = (labels > 0) & ~np.isin(labels, kept[kept > 0])
    reset_box = geometry.mask_box(reset)
    if reset_box is None:
        return None
    whole = tuple(slice(s.start + r.start, s.start + r.stop) for s, r in zip(box, reset_box))
    where = reset[reset_box]
    if probability.ndim == 3:
        probability[whole][where] = previous[whole][where]
    else:  # several classes: the region goes back in every class
        probability[(slice(None),) + whole][:, where] = previous[(slice(None),) + whole][:, where]
    return whole
