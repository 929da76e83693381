"""From the working grid back to the CT: the binary mask (or, for several output classes, the
label map) of a probability on the CT box."""
from __future__ import annotations

import numpy as np

from . import classes, geometry


def to_ct(probability: np.ndarray, threshold: float, grid, ct_box_grid, previous=None,
          box=None, *, copies=None, device=None, labels=(1,)) -> np.ndarray:
    """Binary mask (uint8) on ``ct_box_grid`` of the working-grid ``probability`` (on ``grid``).

    Equals re-sampling everything (linear), but re-samples only the CT voxels that can differ
    from ``previous`` (a :class:`~.state.State`, or None). Linear interpolation is a convex
    combination of a CT voxel's 8 working-grid neighbours, so the voxel is 0 before and after
    unless one of them is foreground in either probability, and unchanged unless one of them lies
    in ``box`` (the only region where the probability changed; None = anywhere). Such voxels lie
    within one working voxel of both the foregrounds' bounding box and ``box``.

    ``copies``: the backend's :class:`~.backend.DeviceCopies` when the click stays on ``device``:
    then :func:`to_ct_device` does it there with their tensors (one class only).

    C > 1 classes (``probability`` ``[C, k, j, i]``): the foreground is any class's, each class is
    re-sampled alone and the CT voxels get a label map (:func:`.classes.label_map`, ``labels`` in
    class order), on the host.
    """
    if probability.ndim == 4:
        return _to_ct_classes(probability, threshold, grid, ct_box_grid, previous, box, labels)
    if copies is not None:
        return to_ct_device(copies.of(probability, device), threshold, grid, ct_box_grid, previous, box,
                            None if previous is None else copies.of(previous.probability, device))
    shape = grid.shape
    region = tuple(slice(0, n) for n in shape) if box is None else geometry.expand_box(box, shape, 1)
    foreground = classes.above_threshold(probability[region], threshold)
    if previous is not None:
        foreground |= classes.above_threshold(previous.probability[region], threshold)
    out = np.zeros(ct_box_grid.shape, np.uint8) if previous is None else previous.ct_mask.copy()
    found = geometry.mask_box(foreground)
    if found is None:  # no foreground before or after: nothing can change
        return out
    boxes = _changed_ct_boxes(found, region, grid, ct_box_grid)
    if boxes is None:
        return out
    ct_sub, ct_sub_grid, source = boxes
    crop = probability[source].astype(np.float32)
    prob_ct = geometry.resample_probability(crop, geometry.sub_grid(grid, source), ct_sub_grid)
    out[ct_sub] = prob_ct > threshold
    return out


def _to_ct_classes(probability, threshold, grid, ct_box_grid, previous, box, labels) -> np.ndarray:
    """:func:`to_ct` of a ``[C, k, j, i]`` probability: a label map on the CT box."""
    shape = grid.shape
    region = tuple(slice(0, n) for n in shape) if box is None else geometry.expand_box(box, shape, 1)
    channels = (slice(None),)
    found_in = classes.foreground(probability[channels + region], threshold)
    if previous is not None:
        found_in |= classes.foreground(previous.probability[channels + region], threshold)
    out = np.zeros(ct_box_grid.shape, np.uint8) if previous is None else previous.ct_mask.copy()
    found = geometry.mask_box(found_in)
    boxes = None if found is None else _changed_ct_boxes(found, region, grid, ct_box_grid)
    if boxes is None:
        return out
    ct_sub, ct_sub_grid, source = boxes
    source_grid = geometry.sub_grid(grid, source)
    prob_ct = np.stack([geometry.resample_probability(channel[source], source_grid, ct_sub_grid)
                        for channel in probability])
    out[ct_sub] = classes.label_map(prob_ct, threshold, labels)
    return out


def to_ct_device(probability, threshold: float, grid, ct_box_grid, previous=None, box=None,
                 previous_probability=None) -> np.ndarray:
    """:func:`to_ct` on the device of the torch tensor ``probability`` (``[k, j, i]``, any float
    dtype, e.g. the backend's CUDA output): the same region logic, the changed CT voxels re-sampled
    trilinearly there (``grid_sample``), and only that CT sub-box's uint8 mask copied to the host.

    ``previous``: the previous :class:`~.state.State` (its ``ct_mask`` is copied and updated);
    ``previous_probability``: its probability as a tensor on the same device (None: copied from
    ``previous.probability``). Equal to :func:`to_ct` up to float32 rounding of the interpolation
    (a voxel can differ only where the re-sampled probability is within ~1e-6 of ``threshold``).
    """
    import torch

    shape = grid.shape
    device = probability.device
    region = tuple(slice(0, n) for n in shape) if box is None else geometry.expand_box(box, shape, 1)
    foreground = probability[region] > threshold
    if previous is not None:
        if previous_probability is None:
            previous_probability = torch.from_numpy(np.ascontiguousarray(previous.probability)).to(device)
        foreground |= previous_probability[region] > threshold
    out = np.zeros(ct_box_grid.shape, np.uint8) if previous is None else previous.ct_mask.copy()
    found = _tensor_box(foreground)  # one small host transfer: three "any" profiles
    if found is None:
        return out
    boxes = _changed_ct_boxes(found, region, grid, ct_box_grid)
    if boxes is None:
        return out
    ct_sub, ct_sub_grid, source = boxes
    crop = probability[source].double()  # float64 arithmetic, as scipy's, then float32
    prob_ct = resample_linear(crop, geometry.sub_grid(grid, source), ct_sub_grid).float()
    out[ct_sub] = (prob_ct > threshold).to(torch.uint8).cpu().numpy()
    return out


def _changed_ct_boxes(found, region, grid, ct_box_grid):
    """For the foreground box ``found`` (relative to ``region`` of the working ``grid``): the CT
    voxels it can change (``ct_sub``, slices of ``ct_box_grid``), their grid, and the working-grid
    box their interpolation reads (``source``); None when no CT voxel is concerned."""
    shape = grid.shape
    found = tuple(slice(r.start + f.start, r.start + f.stop) for r, f in zip(region, found))
    remap = geometry.intersect(geometry.expand_box(found, shape, 1), region)
    ct_sub = geometry.bounding_box_in(ct_box_grid, geometry.sub_grid(grid, remap))
    if any(s.stop <= s.start for s in ct_sub):
        return None
    ct_sub_grid = geometry.sub_grid(ct_box_grid, ct_sub)
    # The neighbours those CT voxels read lie inside their bounding box grown by 1 (keep 2).
    source = geometry.expand_box(geometry.bounding_box_in(grid, ct_sub_grid), shape, 2)
    return ct_sub, ct_sub_grid, source


def resample_linear(crop, source, target):
    """Trilinear re-sampling of the tensor ``crop`` (on ``source``) onto ``target`` on ``crop``'s
    device, in ``crop``'s dtype (float64: as scipy computes it), as :func:`.geometry.resample`
    does it: up to one voxel beyond ``crop`` the edge value (its edge padding), further out 0."""
    import torch
    import torch.nn.functional as F

    matrix, offset = geometry._kji_affine(target, source)
    device = crop.device
    dtype = crop.dtype
    # the target's k, j and i indices as broadcastable columns: no meshgrid of the target's size
    axes = [torch.arange(n, device=device, dtype=dtype).view([-1 if a == b else 1 for b in range(3)])
            for a, n in enumerate(target.shape)]
    coords, inside = [], None  # source (k, j, i) of every target voxel, normalised for grid_sample
    for row, n in enumerate(crop.shape):
        c = (axes[0] * float(matrix[row, 0]) + float(offset[row])) + axes[1] * float(matrix[row, 1])
        c = c + axes[2] * float(matrix[row, 2])
        within = (c >= -1.0) & (c <= float(n))  # inside the edge-padded crop
        inside = within if inside is None else inside & within
        coords.append(c.mul_(2.0 / (n - 1)).sub_(1.0) if n > 1 else torch.zeros_like(c))
    sample = torch.stack(coords[::-1], dim=-1)[None]  # grid_sample wants (x, y, z) = (i, j, k)
    out = F.grid_sample(crop[None, None], sample, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0] * inside


def _tensor_box(mask) -> tuple | None:
    """:func:`.geometry.mask_box` of a boolean tensor, computed on its device."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = mask.any(dim=other[1]).any(dim=other[0]) if len(other) == 2 else mask
        hits = hits.nonzero().flatten().cpu()
        if hits.numel() == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
