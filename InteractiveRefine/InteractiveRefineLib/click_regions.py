"""Region removal: a negative click on a separate false-positive region removes all of it.

A clinician who places a "not tumour" point on a hot salivary gland or on brain uptake means the
whole blob, not the few millimetres around the point. The refine network, trained with Gaussian
click maps, often carves only a hole around the click and leaves the rest of the region (on the
real head-and-neck case the brain's uptake shrinks by a few hundred voxels per click). The
session therefore applies one rule on top of the network, on the working grid:

1. A negative click that lands on the mask the user saw (the previous state's foreground) marks
   the connected region it lands on (26-connectivity) as *rejected*.
2. A rejected region is removed (probability set to 0) once the user has shown where the tumour
   is and it is elsewhere: at least one positive click exists, no positive click lies in the
   region, and the region does not touch any region of the refined mask that holds a positive
   click. Until then the network alone answers the click.
3. The rule is applied after every refinement, so the network cannot bring a removed region back
   on a later click; a later positive click in or next to a rejected region revokes it: "next to"
   is within the click's reach (:data:`CLICK_REACH_VOX` voxels per axis, the reach of a click's
   local edit), whether or not the refined mask grew to the click.

Waiting for a positive click is what keeps the rule safe: a negative click on a leak that is
attached to the tumour rejects the tumour's region too, but the tumour's positive click (or the
refined tumour touching that region) revokes the rejection instead of erasing the tumour.

The rule is a pure function of the click history and the states the user saw, so the session
stays deterministic, undo restores the previous rejections with the previous state, and replaying
the same clicks gives the same mask.

Where the arrays live: the functions take numpy arrays (labelled with ``scipy.ndimage``) or CuPy
arrays (labelled on the GPU with ``cupyx.scipy.ndimage``, the same routines), the same code for
both. :func:`arrays_for` picks them for a session: CuPy on the device-resident click path on CUDA
when CuPy is installed, else the host.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import classes
from .geometry import mask_box

#: Help text of every command line's ``--no-region-removal`` flag.
NO_REGION_REMOVAL_HELP = (
    "leave every click to the network alone (by default a negative click on a separate region of "
    "the mask removes that whole region once a positive click marks the tumour elsewhere)"
)

#: 26-connectivity: regions touching at an edge or a corner are one region (the conservative
#: choice for removal, since a larger region more likely holds or touches a positive click).
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def _modules(array) -> tuple:
    """``(array module, ndimage module)`` of ``array``: numpy and scipy's, or CuPy's."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy
        from cupyx.scipy import ndimage as cupy_ndimage

        return cupy, cupy_ndimage
    return np, ndimage


def like(array, reference):
    """``array`` in ``reference``'s array module (a rejection kept on the GPU read on the host
    after a move to the CPU, or the reverse)."""
    xp = _modules(reference)[0]
    if _modules(array)[0] is xp:
        return array
    return xp.asarray(array) if xp is not np else array.get()


def rejected_region(foreground, index):
    """The connected region of ``foreground`` (bool ``[k, j, i]``, numpy or CuPy) that a negative
    click at ``index`` lands on, or None when it lands on background."""
    index = tuple(int(v) for v in index)
    if not bool(foreground[index]):
        return None
    labels, box = _labels(foreground)
    region = _modules(foreground)[0].zeros(foreground.shape, dtype=bool)
    region[box] = labels == labels[tuple(i - s.start for i, s in zip(index, box))]
    return region


def _labels(foreground) -> tuple:
    """``(labels, box)``: the 26-connected regions of ``foreground`` labelled inside its bounding
    box ``box`` only (every region lies inside it, so this equals labelling the whole ROI, up to
    the numbering, at the cost of the box). ``box`` covers the whole array when it is empty."""
    xp, ndi = _modules(foreground)
    box = mask_box(foreground) or tuple(slice(0, 0) for _ in foreground.shape)
    labels, _ = ndi.label(foreground[box], structure=xp.asarray(_STRUCTURE))
    return labels, box


def _label_at(labels, box, index) -> int:
    local = tuple(int(i) - s.start for i, s in zip(index, box))
    if any(v < 0 or v >= n for v, n in zip(local, labels.shape)):
        return 0  # outside the foreground's box: background
    return int(labels[local])


#: How near (voxels, per axis) to a click a region must come to be the click's: a changed region
#: within it is the click's local edit; a rejected region within it of a positive click is revoked.
CLICK_REACH_VOX = 2


def near(index, shape, reach: int = CLICK_REACH_VOX) -> tuple:
    """The box of voxels within ``reach`` voxels per axis of ``index``, clipped to ``shape`` (empty
    where ``index`` lies farther than ``reach`` outside it)."""
    return tuple(slice(min(max(int(c) - reach, 0), n), max(min(int(c) + reach + 1, n), 0))
                 for c, n in zip(index, shape))


def within_reach(region, index) -> bool:
    """Whether ``region`` (bool, numpy or CuPy) has a voxel within :data:`CLICK_REACH_VOX` of
    ``index``: a positive click there revokes the rejection."""
    return bool(region[near(index, region.shape)].any())


def revoked_by(rejections, index) -> int:
    """How many ``rejections`` a positive click at ``index`` keeps (lies in or beside): what the
    user is told, since the region they marked "not tumour" stays."""
    return sum(within_reach(region, index) for region in rejections)


def suppressed(rejections, foreground, positive_indices):
    """Union of the ``rejections`` to remove from the refined ``foreground``, or None (in
    ``foreground``'s array module).

    A rejection is removed only when there are positive clicks, none lies in it or within
    :data:`CLICK_REACH_VOX` of it (a "tumour" click on the background just outside a rejected
    region says the tumour is there, even when the refined mask did not grow to the click), and
    it does not touch a region of ``foreground`` that holds one.
    """
    positive_indices = [tuple(int(v) for v in p) for p in positive_indices]
    if not rejections or not positive_indices:
        return None
    xp, ndi = _modules(foreground)
    labels, found = _labels(foreground)  # labelled inside the foreground's bounding box
    kept = {_label_at(labels, found, p) for p in positive_indices} - {0}
    tumour = None
    if kept:  # the positive clicks' regions grown by one voxel, computed in their bounding box
        core = xp.zeros(foreground.shape, dtype=bool)
        core[found] = xp.isin(labels, xp.asarray(sorted(kept)))
        box = mask_box(core, pad=1)
        tumour = xp.zeros_like(core)
        tumour[box] = ndi.binary_dilation(core[box], structure=xp.asarray(_STRUCTURE))
    out = None
    for region in rejections:
        region = like(region, foreground)
        if any(within_reach(region, p) for p in positive_indices):
            continue
        if tumour is not None and bool((region & tumour).any()):
            continue
        out = region.copy() if out is None else out | region
    return out


class HostArrays:
    """Region removal on the host: numpy masks of the history's arrays, scipy's labelling."""

    name = "scipy"

    def foreground(self, probability, threshold: float):
        return classes.foreground(probability, threshold)


class CupyArrays:
    """Region removal on the GPU: the masks are made from the device copies of the history's
    probabilities (:class:`~.backend.DeviceCopies`, copied when missing) and labelled with
    ``cupyx.scipy.ndimage``; the rejected regions stay on the device."""

    name = "cupy"

    def __init__(self, copies, device):
        self.copies, self.device = copies, device

    def foreground(self, probability, threshold: float):
        import cupy
        import torch

        tensor = self.copies.of(probability, self.device)
        mask = classes.foreground(tensor, threshold).to(torch.uint8)
        return cupy.from_dlpack(mask).astype(bool)


_HOST = HostArrays()
_CUPY_IMPORTS: list = []  # [True or False] once tried: one import attempt per process, not per click


def _cupy_imports() -> bool:
    if not _CUPY_IMPORTS:
        try:
            import cupy  # noqa: F401
            from cupyx.scipy import ndimage as _  # noqa: F401
        except ImportError:
            _CUPY_IMPORTS.append(False)
        else:
            _CUPY_IMPORTS.append(True)
    return _CUPY_IMPORTS[0]


def arrays_for(backend):
    """Where a session's region removal runs: :class:`CupyArrays` on the device-resident click
    path on CUDA when CuPy imports, else :class:`HostArrays`."""
    if backend.device_path and backend.device.type == "cuda" and _cupy_imports():
        return CupyArrays(backend.resident, backend.device)
    return _HOST
