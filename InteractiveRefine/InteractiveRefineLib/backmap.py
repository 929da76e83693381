"""From the working grid back to the CT: the binary mask of a probability on the CT box."""
from __future__ import annotations

import numpy as np

from . import geometry


def to_ct(probability: np.ndarray, threshold: float, grid, ct_box_grid, previous=None,
          box=None) -> np.ndarray:
    """Binary mask (uint8) on ``ct_box_grid`` of the working-grid ``probability`` (on ``grid``).

    Equals re-sampling everything (linear), but re-samples only the CT voxels that can differ
    from ``previous`` (a :class:`~.state.State`, or None). Linear interpolation is a convex
    combination of a CT voxel's 8 working-grid neighbours, so the voxel is 0 before and after
    unless one of them is foreground in either probability, and unchanged unless one of them lies
    in ``box`` (the only region where the probability changed; None = anywhere). Such voxels lie
    within one working voxel of both the foregrounds' bounding box and ``box``.
    """
    shape = grid.shape
    region = tuple(slice(0, n) for n in shape) if box is None else geometry.expand_box(box, shape, 1)
    foreground = probability[region] > threshold
    if previous is not None:
        foreground |= previous.probability[region] > threshold
    out = np.zeros(ct_box_grid.shape, np.uint8) if previous is None else previous.ct_mask.copy()
    found = geometry.mask_box(foreground)
    if found is None:  # no foreground before or after: nothing can change
        return out
    found = tuple(slice(r.start + f.start, r.start + f.stop) for r, f in zip(region, found))
    remap = geometry.intersect(geometry.expand_box(found, shape, 1), region)
    ct_sub = geometry.bounding_box_in(ct_box_grid, geometry.sub_grid(grid, remap))
    if any(s.stop <= s.start for s in ct_sub):
        return out
    ct_sub_grid = geometry.sub_grid(ct_box_grid, ct_sub)
    # The neighbours those CT voxels read lie inside their bounding box grown by 1 (keep 2).
    source = geometry.expand_box(geometry.bounding_box_in(grid, ct_sub_grid), shape, 2)
    crop = probability[source].astype(np.float32)
    prob_ct = geometry.resample(crop, geometry.sub_grid(grid, source), ct_sub_grid, order=1)
    out[ct_sub] = prob_ct > threshold
    return out
