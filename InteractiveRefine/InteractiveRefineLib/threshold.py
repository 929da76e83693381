"""The classical one-click PET region: the connected region of PET >= f x the local SUVmax.

A clinician with a threshold tool clicks in the tumour; the tool finds the hottest voxel within
a search radius of the click (the local SUVmax), keeps every voxel of at least ``fraction`` of it
(40 %: the MTV-41 % convention of most PET workstations; 50 % is the other common choice), and
returns the connected region (26-connectivity) that holds that hottest voxel. It runs on the PET's
own grid; callers map the mask to their grid like any other mask.

``method="background"`` is the source-to-background (background-corrected) adaptive threshold:
``T = SUVbg + f x (SUVmax - SUVbg)``, the fraction taken of the contrast above the local
background instead of the whole SUVmax (the background-subtracted relative threshold of Daisne et
al. 2003, Radiother Oncol 69:247, and Nestle et al. 2005, J Nucl Med 46:1342; the EANM guideline
v2.0, Boellaard et al. 2015, Eur J Nucl Med Mol Imaging 42:328, recommends 41 % or 50 % of the
maximum, preferably background corrected). ``SUVbg`` is the median SUV, inside the body, of the
shell :data:`BACKGROUND_SHELL_MM` (10-20 mm) outside the fixed 40 % region; on a zero background
the region is the fixed-fraction one. ``method="fixed"`` (the default) is the plain ``f x SUVmax``.

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
#: The threshold methods: ``fixed`` (PET >= f x SUVmax) and ``background`` (PET >= SUVbg +
#: f x (SUVmax - SUVbg)).
METHODS = ("fixed", "background")
#: Default method (the one every caller had before ``background`` existed).
DEFAULT_METHOD = "fixed"
#: The background shell of the ``background`` method: from 10 to 20 mm outside the region of
#: PET >= :data:`BACKGROUND_REFERENCE_FRACTION` x SUVmax.
BACKGROUND_SHELL_MM = (10.0, 20.0)
BACKGROUND_REFERENCE_FRACTION = 0.4


@dataclass(frozen=True)
class ThresholdRegion:
    """A threshold region on the PET grid: ``mask`` (bool ``[k, j, i]``), the local ``suvmax``
    and where it is (``peak_ras``), the ``fraction`` and the absolute ``threshold`` used, the
    region's ``volume_ml``, the ``method`` and, for ``background``, the ``background`` SUV."""

    mask: np.ndarray
    suvmax: float
    peak_ras: tuple
    fraction: float
    threshold: float
    volume_ml: float
    method: str = DEFAULT_METHOD
    background: float | None = None

    def summary(self) -> dict:
        out = {"suvmax": round(self.suvmax, 3), "fraction": self.fraction,
               "threshold_suv": round(self.threshold, 3), "volume_ml": round(self.volume_ml, 3),
               "peak_ras": [round(float(v), 2) for v in self.peak_ras], "method": self.method}
        if self.background is not None:
            out["background_suv"] = round(self.background, 3)
        return out


def check_fraction(fraction) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ThresholdError(f"the threshold fraction must lie between 0 and 1 (e.g. 0.4), got {fraction}")
    return fraction


def check_method(method) -> str:
    if method is None:
        return DEFAULT_METHOD
    name = str(method).strip().lower()
    if name not in METHODS:
        raise ThresholdError(f"unknown threshold method {method!r}: expected one of {', '.join(METHODS)}")
    return name


def threshold_options(fraction=DEFAULT_FRACTION, radius_mm=SEARCH_RADIUS_MM, min_suvmax=MIN_SUVMAX,
                      method=DEFAULT_METHOD) -> tuple:
    """A threshold click's options as :class:`~.clicks.Click` stores them (validated). The
    ``fixed`` method stores no ``method`` entry (the options of every click before the
    ``background`` method existed); any other method is stored, so undo and replay give the same
    region."""
    method = check_method(method)
    options = (("fraction", check_fraction(fraction)), ("radius_mm", float(radius_mm)),
               ("min_suvmax", float(min_suvmax)))
    return options if method == DEFAULT_METHOD else options + (("method", method),)


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


def _connected(array: np.ndarray, level: float, index) -> np.ndarray:
    """The connected region (26-connectivity) of ``array >= level`` holding ``index``."""
    from scipy import ndimage

    labels, _ = ndimage.label(array >= level, structure=np.ones((3, 3, 3), bool))
    return labels == labels[index]


def shell_background(pet: Volume, region: np.ndarray, shell_mm=BACKGROUND_SHELL_MM) -> float:
    """The median SUV of the voxels inside the body (above :data:`BODY_MIN_SUV`) whose distance
    to ``region`` (bool, PET grid) lies in ``(shell_mm[0], shell_mm[1]]`` mm; 0 where the shell
    holds none (e.g. air all around)."""
    from scipy import ndimage

    inner, outer = (float(v) for v in shell_mm)
    spacing = np.asarray(pet.grid.spacing, float)[::-1]  # k, j, i
    reach = np.ceil(outer / spacing).astype(int) + 1
    where = np.argwhere(region)
    low = np.maximum(where.min(axis=0) - reach, 0)
    high = np.minimum(where.max(axis=0) + reach + 1, region.shape)
    box = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))
    distance = ndimage.distance_transform_edt(~region[box], sampling=spacing)
    values = pet.array[box][(distance > inner) & (distance <= outer)]
    values = values[values > BODY_MIN_SUV]
    return float(np.median(values)) if values.size else 0.0


def threshold_region(pet: Volume, seed_ras, fraction: float = DEFAULT_FRACTION,
                     radius_mm: float = SEARCH_RADIUS_MM, min_suvmax: float = MIN_SUVMAX,
                     method: str = DEFAULT_METHOD) -> ThresholdRegion:
    """The connected region of ``pet >= fraction x local SUVmax`` (``method="fixed"``, the
    default) or of ``pet >= SUVbg + fraction x (SUVmax - SUVbg)`` (``method="background"``,
    :func:`shell_background`) holding the local maximum within ``radius_mm`` of ``seed_ras``
    (RAS mm), on the PET grid."""
    fraction = check_fraction(fraction)
    method = check_method(method)
    index, suvmax = local_peak(pet, seed_ras, radius_mm)
    if not np.isfinite(suvmax) or suvmax < min_suvmax:
        raise ThresholdError(
            f"the PET's maximum within {radius_mm:g} mm of the point is SUV {suvmax:.2f}, below the "
            f"minimum of {min_suvmax:g} for a threshold region: place the point in the hot tumour"
        )
    background = None
    if method == "fixed":
        level = fraction * suvmax
    else:
        reference = _connected(pet.array, BACKGROUND_REFERENCE_FRACTION * suvmax, index)
        background = shell_background(pet, reference)
        if background >= suvmax:
            raise ThresholdError(
                f"the background around the point (median SUV {background:.2f}, "
                f"{BACKGROUND_SHELL_MM[0]:g}-{BACKGROUND_SHELL_MM[1]:g} mm outside the 40 % region) is "
                f"not below its SUVmax {suvmax:.2f}: no contrast for a background-corrected threshold; "
                "use the fixed fraction"
            )
        level = background + fraction * (suvmax - background)
    mask = _connected(pet.array, level, index)
    peak = pet.grid.index_to_ras(np.array(index[::-1], float))
    voxel_ml = float(np.prod(pet.grid.spacing)) / 1000.0
    return ThresholdRegion(mask, suvmax, tuple(float(v) for v in peak), fraction, level,
                           float(mask.sum()) * voxel_ml, method, background)


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
    return _connected(suv, check_fraction(fraction) * suvmax, peak)
