"""The classical one-click PET region: the connected region of PET >= f x the local SUVmax.

A clinician with a threshold tool clicks in the tumour; the tool finds the hottest voxel within
a search radius of the click (the local SUVmax), keeps every voxel of at least ``fraction`` of it
(40 %: the MTV-41 % convention of most PET workstations; 50 % is the other common choice), and
returns the connected region (26-connectivity) that holds that hottest voxel. It runs on the PET's
own grid; callers map the mask to their grid like any other mask.

Refused with a :class:`ThresholdError`, changing nothing: a click outside the PET, a local SUVmax
below ``min_suvmax`` (default :data:`MIN_SUVMAX`: no uptake to threshold), and a PET that does
not look like SUV (:func:`check_suv`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ThresholdError
from .geometry import Volume

#: Default fraction of the local SUVmax.
DEFAULT_FRACTION = 0.4
#: Default search radius around the click for the local SUVmax (mm).
SEARCH_RADIUS_MM = 10.0
#: Below this local SUVmax (SUVbw) a click has no uptake to threshold.
MIN_SUVMAX = 2.0
#: The median SUV inside the body of a PET in SUVbw lies in this range (soft tissue, blood pool:
#: about 0.3-2); a median outside it means counts, Bq/mL or a scaled image.
BODY_MEDIAN_SUV = (0.05, 5.0)
#: Voxels above this value count as inside the body for :func:`check_suv`.
BODY_MIN_SUV = 0.05


@dataclass(frozen=True)
class ThresholdRegion:
    """A threshold region on the PET grid: ``mask`` (bool ``[k, j, i]``), the local ``suvmax``
    and where it is (``peak_ras``), the ``fraction`` and the absolute ``threshold`` used, and the
    region's ``volume_ml``."""

    mask: np.ndarray
    suvmax: float
    peak_ras: tuple
    fraction: float
    threshold: float
    volume_ml: float

    def summary(self) -> dict:
        return {"suvmax": round(self.suvmax, 3), "fraction": self.fraction,
                "threshold_suv": round(self.threshold, 3), "volume_ml": round(self.volume_ml, 3),
                "peak_ras": [round(float(v), 2) for v in self.peak_ras]}


def check_fraction(fraction) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ThresholdError(f"the threshold fraction must lie between 0 and 1 (e.g. 0.4), got {fraction}")
    return fraction


def threshold_options(fraction=DEFAULT_FRACTION, radius_mm=SEARCH_RADIUS_MM, min_suvmax=MIN_SUVMAX) -> tuple:
    """A threshold click's options as :class:`~.clicks.Click` stores them (validated)."""
    return (("fraction", check_fraction(fraction)), ("radius_mm", float(radius_mm)),
            ("min_suvmax", float(min_suvmax)))


def check_suv(pet: Volume, body_range=BODY_MEDIAN_SUV) -> float:
    """The median PET value inside the body (voxels above :data:`BODY_MIN_SUV`); raises
    :class:`ThresholdError` when it lies outside ``body_range``, where the PET is unlikely to be
    SUV (a threshold on counts or Bq/mL of another scale would be silently wrong)."""
    values = pet.array[pet.array > BODY_MIN_SUV]
    median = float(np.median(values)) if values.size else 0.0
    low, high = body_range
    if not low <= median <= high:
        raise ThresholdError(
            f"the PET's median inside the body is {median:.3g}, outside the range of SUV images "
            f"({low}-{high}): convert it to SUV (body weight) first, or confirm that it is SUV "
            "(pet_is_suv=True; CLI --pet-is-suv)"
        )
    return median


def local_peak(pet: Volume, seed_ras, radius_mm: float = SEARCH_RADIUS_MM) -> tuple:
    """``(index (k, j, i), SUV)`` of the hottest PET voxel within ``radius_mm`` of ``seed_ras``."""
    grid = pet.grid
    ijk = grid.ras_to_index(np.asarray(seed_ras, float))
    if not grid.contains_index(ijk):
        raise ThresholdError(f"the point RAS {np.round(seed_ras, 1).tolist()} mm lies outside the PET")
    spacing = grid.spacing  # mm along i, j, k
    reach = np.ceil(radius_mm / spacing).astype(int)
    centre = np.clip(np.rint(ijk).astype(int), 0, np.array(pet.shape[::-1]) - 1)
    low, high = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, pet.shape[::-1])
    box = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low[::-1], high[::-1]))  # k, j, i
    offsets = np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")
    points = np.stack([o.ravel() for o in offsets[::-1]], axis=1).astype(float)  # i, j, k
    ras = points @ grid.ijk_to_ras[:3, :3].T + grid.ijk_to_ras[:3, 3]
    near = (np.linalg.norm(ras - np.asarray(seed_ras, float), axis=1) <= radius_mm).reshape(offsets[0].shape)
    near.flat[np.ravel_multi_index(tuple(c - s.start for c, s in zip(centre[::-1], box)), near.shape)] = True
    values = np.where(near, pet.array[box], -np.inf)
    flat = int(np.argmax(values))
    local = np.unravel_index(flat, values.shape)
    index = tuple(int(a + s.start) for a, s in zip(local, box))
    return index, float(values.flat[flat])


def threshold_region(pet: Volume, seed_ras, fraction: float = DEFAULT_FRACTION,
                     radius_mm: float = SEARCH_RADIUS_MM, min_suvmax: float = MIN_SUVMAX) -> ThresholdRegion:
    """The connected region of ``pet >= fraction x local SUVmax`` holding the local maximum
    within ``radius_mm`` of ``seed_ras`` (RAS mm), on the PET grid."""
    from scipy import ndimage

    fraction = check_fraction(fraction)
    index, suvmax = local_peak(pet, seed_ras, radius_mm)
    if not np.isfinite(suvmax) or suvmax < min_suvmax:
        raise ThresholdError(
            f"the PET's maximum within {radius_mm:g} mm of the point is SUV {suvmax:.2f}, below the "
            f"minimum of {min_suvmax:g} for a threshold region: place the point in the hot tumour"
        )
    level = fraction * suvmax
    labels, _ = ndimage.label(pet.array >= level, structure=np.ones((3, 3, 3), bool))
    mask = labels == labels[index]
    peak = pet.grid.index_to_ras(np.array(index[::-1], float))
    voxel_ml = float(np.prod(pet.grid.spacing)) / 1000.0
    return ThresholdRegion(mask, suvmax, tuple(float(v) for v in peak), fraction, level,
                           float(mask.sum()) * voxel_ml)


def innermost_point(label: np.ndarray, grid) -> np.ndarray | None:
    """RAS of the label's innermost voxel (largest distance to its border, in mm), the point a
    clinician clicks for a threshold tool; None for an empty label."""
    from scipy import ndimage

    if not label.any():
        return None
    spacing = np.asarray(grid.spacing, float)[::-1]  # k, j, i
    depth = ndimage.distance_transform_edt(np.pad(label, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    index = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return grid.index_to_ras(np.array(index[::-1], float))


def region_in_array(suv: np.ndarray, index, spacing_kji, fraction: float = DEFAULT_FRACTION,
                    radius_mm: float = SEARCH_RADIUS_MM, min_suvmax: float = MIN_SUVMAX):
    """:func:`threshold_region` on an axis-aligned array (the working grid): the connected
    region (26-connectivity) of ``suv >= fraction x`` the hottest voxel within ``radius_mm`` of
    ``index`` ``(k, j, i)`` (``spacing_kji`` in mm), as a bool array; None where that maximum is
    below ``min_suvmax`` (no uptake to threshold). The network input ``pet_region``
    (:mod:`.inputs.pet_region`) and the training package both build it with this function.
    """
    from scipy import ndimage

    spacing = np.asarray(spacing_kji, float)
    centre = np.clip(np.rint(np.asarray(index, float)).astype(int), 0, np.array(suv.shape) - 1)
    reach = np.ceil(radius_mm / spacing).astype(int)
    box = tuple(slice(max(int(c - r), 0), min(int(c + r + 1), n))
                for c, r, n in zip(centre, reach, suv.shape))
    offsets = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * d for s, c, d in zip(box, centre, spacing)],
                          indexing="ij", sparse=True)
    near = sum(o ** 2 for o in offsets) <= radius_mm ** 2
    values = np.where(near, suv[box], -np.inf)
    flat = int(np.argmax(values))
    suvmax = float(values.flat[flat])
    if not np.isfinite(suvmax) or suvmax < min_suvmax:
        return None
    peak = tuple(int(a + s.start) for a, s in zip(np.unravel_index(flat, values.shape), box))
    labels, _ = ndimage.label(suv >= check_fraction(fraction) * suvmax, structure=np.ones((3, 3, 3), bool))
    return labels == labels[peak]
