"""Lesion measurements of a contour on the CT grid against the PET (SUVbw).

Definitions (``measure`` returns them under these keys):

- ``volume_ml``: the contour's CT-grid voxels x the CT voxel volume.
- ``suv_max``: the highest native PET voxel whose centre lies inside the contour (the contour
  resampled to the PET grid, nearest neighbour); for a contour smaller than a PET voxel, the
  highest PET value (linear) at its CT voxels.
- ``suv_peak``: PERCIST's SUVpeak: the highest mean SUV in a 1 mL sphere (radius 6.2 mm) centred
  on a PET voxel inside the contour; the sphere is weighted by each PET voxel's overlap with it
  (5 x 5 x 5 sub-samples per voxel), on the native PET grid (it may reach past the contour).
- ``suv_mean``: mean SUV (PET resampled linearly to the CT grid) over the contour's CT voxels.
- ``mtv_ml`` and ``tlg``: the metabolic tumour volume is the part of the contour with
  SUV >= ``mtv_fraction`` x its SUVmax (default 0.41, the EANM guideline's 41 % SUVmax), or with
  SUV >= ``mtv_absolute`` when given (e.g. 2.5); TLG = MTV (mL) x SUVmean inside the MTV.
- ``mtv_threshold``: the SUV threshold that was used, and ``mtv_definition`` in words.

A PET not in SUV gives numbers in its own units: :mod:`.dicom_series` converts DICOM to SUV.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import ImageError
from .geometry import Grid, Volume, mask_box, resample, sub_grid

#: Radius (mm) of a 1 mL sphere: (3 / (4 pi))^(1/3) x 10 mm.
PEAK_RADIUS_MM = (3.0 / (4.0 * np.pi)) ** (1.0 / 3.0) * 10.0
#: EANM guideline's 41 % of SUVmax for the metabolic tumour volume.
DEFAULT_MTV_FRACTION = 0.41
#: Columns of the measurements, in order (the batch CSV's and ``segment``'s JSON keys).
KEYS = ("volume_ml", "suv_max", "suv_peak", "suv_mean", "mtv_ml", "tlg", "mtv_threshold")


def sphere_kernel(spacing_ijk, radius_mm: float = PEAK_RADIUS_MM, subsamples: int = 5) -> np.ndarray:
    """``[k, j, i]`` weights of a sphere on a grid of ``spacing_ijk`` mm, summing to 1.

    Each weight is the fraction of a voxel's ``subsamples**3`` sub-points inside the sphere.
    """
    spacing = np.asarray(spacing_ijk, dtype=float)
    half = np.ceil(radius_mm / spacing + 0.5).astype(int)
    offsets = (np.arange(subsamples) + 0.5) / subsamples - 0.5
    axes = [(np.arange(-h, h + 1)[:, None] + offsets[None, :]) * s for h, s in zip(half[::-1], spacing[::-1])]
    k, j, i = (a.reshape(-1) for a in axes)
    inside = (k[:, None, None] ** 2 + j[None, :, None] ** 2 + i[None, None, :] ** 2) <= radius_mm ** 2
    shape = tuple(2 * h + 1 for h in half[::-1])
    weights = inside.reshape(shape[0], subsamples, shape[1], subsamples, shape[2], subsamples)
    weights = weights.mean(axis=(1, 3, 5))
    return weights / weights.sum()


def _suv_max(pet: Volume, mask: np.ndarray, ct_grid: Grid, pet_on_ct: np.ndarray):
    """(SUVmax, contour on the PET grid)."""
    on_pet = resample(mask.astype(np.float32), ct_grid, pet.grid, order=0) > 0.5
    if on_pet.any():
        return float(pet.array[on_pet].max()), on_pet
    return float(pet_on_ct[mask].max()), on_pet


def suv_peak(pet: Volume, on_pet: np.ndarray, fallback: float) -> float:
    """PERCIST SUVpeak: the highest 1 mL sphere mean centred on a PET voxel of ``on_pet``."""
    if not on_pet.any():
        return fallback
    kernel = sphere_kernel(pet.grid.spacing)
    pad = [(n // 2, n // 2) for n in kernel.shape]
    lesion = ndimage.find_objects(on_pet.astype(int))[0]
    box = [slice(max(s.start - p[0], 0), s.stop + p[0]) for s, p in zip(lesion, pad)]
    region = pet.array[tuple(box)].astype(np.float64)
    means = ndimage.correlate(region, kernel, mode="nearest")
    return float(means[on_pet[tuple(box)]].max())


def measure(mask: np.ndarray, ct_grid: Grid, pet: Volume | None, mtv_fraction: float = DEFAULT_MTV_FRACTION,
            mtv_absolute: float | None = None) -> dict:
    """Measurements of ``mask`` (``[k, j, i]`` on ``ct_grid``) on ``pet`` (module docstring).

    Without a PET, or with an empty mask, only ``volume_ml`` is a number (the others are None).
    ``mask`` is one class's (bool or 0/1): a label map (values above 1, e.g. GTVn = 2) is refused,
    as counting all its labels would overcount the class; :func:`measure_classes` splits it.
    """
    mask = np.asarray(mask)
    if mask.dtype != bool and mask.size and mask.max() > 1:
        raise ImageError(f"the mask holds label values up to {mask.max()}: a label map; measure its "
                         "classes one by one (measure_classes)")
    mask = mask.astype(bool)
    if mask.shape != tuple(ct_grid.shape):
        raise ImageError(f"mask shape {mask.shape} is not the CT grid's {ct_grid.shape}")
    if not 0.0 < mtv_fraction < 1.0:
        raise ImageError(f"mtv_fraction must be between 0 and 1, got {mtv_fraction}")
    voxel_ml = float(np.prod(ct_grid.spacing)) / 1000.0
    out = dict.fromkeys(KEYS)
    out["volume_ml"] = round(float(mask.sum()) * voxel_ml, 4)
    out["mtv_definition"] = (f"SUV >= {mtv_absolute:g}" if mtv_absolute is not None
                             else f"SUV >= {mtv_fraction:.0%} of SUVmax (EANM)")
    if pet is None or not mask.any():
        return out
    box = mask_box(mask, pad=1)  # only the contour's box is resampled (the CT may be 512^2 x 300)
    mask, ct_grid = mask[box], sub_grid(ct_grid, box)
    pet_on_ct = resample(pet.array, pet.grid, ct_grid, order=1)
    suv_max, on_pet = _suv_max(pet, mask, ct_grid, pet_on_ct)
    values = pet_on_ct[mask]
    threshold = mtv_absolute if mtv_absolute is not None else mtv_fraction * suv_max
    metabolic = values[values >= threshold]
    mtv = float(metabolic.size) * voxel_ml
    out.update(
        suv_max=suv_max, suv_peak=suv_peak(pet, on_pet, suv_max), suv_mean=float(values.mean()),
        mtv_ml=mtv, tlg=mtv * float(metabolic.mean()) if metabolic.size else 0.0,
        mtv_threshold=float(threshold),
    )
    return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in out.items()}


def display_name(name: str) -> str:
    """A card's output name as the measurements, segments and CSV columns show it: ``gtvp`` ->
    ``GTVp``, ``gtvn`` -> ``GTVn`` (other names as written)."""
    return name[:3].upper() + name[3:] if name.lower().startswith("gtv") else name


def classes_of(labels: dict) -> dict:
    """A session's ``{"gtvp": 1, "gtvn": 2}`` as :func:`measure_classes` takes it
    (``{"GTVp": 1, "GTVn": 2}``)."""
    return {display_name(name): int(value) for name, value in labels.items()}


def measure_classes(labels: np.ndarray, ct_grid: Grid, pet: Volume | None, classes=None, **options) -> dict:
    """:func:`measure` per class of a label map: ``{"GTVp": {...}, "GTVn": {...}}``; each class is
    measured on its own voxels only (``labels == value``), so a label map never counts GTVn voxels
    as GTVp.

    ``classes`` maps names to label values (e.g. :func:`classes_of` of ``session.labels``): every
    class named gets a row, an empty one too (volume 0). Default GTVp = 1, GTVn = 2, where GTVn
    is left out when it has no voxel (a one-class model's 0/1 mask).
    """
    explicit = classes is not None
    classes = classes or {"GTVp": 1, "GTVn": 2}
    labels = np.asarray(labels)
    out = {}
    for name, value in classes.items():
        mask = labels == value
        if explicit or mask.any() or name == "GTVp":
            out[name] = measure(mask, ct_grid, pet, **options)
    return out
