"""A small synthetic PET/CT case, for when no sample case is present (demo, the module's self-test).

A neck-like body (an elliptic cylinder of soft tissue in air) with one spherical tumour beside
its centre: barely brighter than soft tissue on CT, hot on PET. The PET lies on its own, coarser
grid with the same centre, as a scanner's does, so the case exercises the PET resampling.
Both grids are LPS-aligned like a DICOM or NIfTI scan (``ijk_to_ras = diag(-si, -sj, sk)``)
and centred on RAS ``(0, 0, 0)``.

It carries no anatomy beyond that: the training package's generator
(``interactive_refine_training.phantoms``) is the realistic one, and the engine never imports it.
Deterministic by ``seed``.
"""
from __future__ import annotations

import numpy as np

from .geometry import Volume

#: Soft tissue, tumour and air on CT (HU); body and tumour uptake on PET (SUV).
CT_HU = {"air": -1000.0, "soft": 40.0, "tumour": 60.0}
PET_SUV = {"body": 1.0, "tumour": 10.0}


def _lps_matrix(shape, spacing_mm) -> np.ndarray:
    """``ijk_to_ras`` of an LPS-aligned grid of ``shape`` ``(k, j, i)`` centred on RAS 0."""
    spacing = np.asarray(spacing_mm, dtype=float)  # (i, j, k)
    matrix = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    centre_index = (np.array(shape[::-1], dtype=float) - 1.0) / 2.0
    matrix[:3, 3] = -matrix[:3, :3] @ centre_index
    return matrix


def _ras_of_voxels(shape, matrix) -> np.ndarray:
    """RAS mm of every voxel centre, ``(k, j, i, 3)``."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    ijk = np.stack([i, j, k], axis=-1)
    return ijk @ matrix[:3, :3].T + matrix[:3, 3]


def make_phantom(seed: int = 0, shape=(40, 96, 96), spacing_mm=(1.0, 1.0, 2.0),
                 pet_spacing_mm=(2.0, 2.0, 4.0), tumour_radius_mm: float = 15.0):
    """``(ct, pet, label)`` volumes of a neck-like phantom with one tumour.

    Args:
        seed: seeds the image noise (the geometry does not depend on it).
        shape: CT array shape ``(k, j, i)``.
        spacing_mm: CT voxel size along ``(i, j, k)``.
        pet_spacing_mm: PET voxel size along ``(i, j, k)``; the PET grid covers the CT's extent.
        tumour_radius_mm: radius of the spherical tumour.

    Returns:
        CT in HU (float32), PET in SUV (float32, blurred by a 6 mm FWHM Gaussian) and the
        tumour label (uint8, 1 = GTVp) on the CT grid.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    extent = np.array(shape[::-1], dtype=float) * np.asarray(spacing_mm, dtype=float)  # (i, j, k)
    # In RAS: x (i) is the patient's left-right, y (j) anterior-posterior.
    semi_axes = np.array([0.40 * extent[0], 0.45 * extent[1]])
    tumour_centre = np.array([0.15 * extent[0], 0.12 * extent[1], 0.0])

    def regions(ras):
        body = ((ras[..., :2] / semi_axes) ** 2).sum(axis=-1) < 1.0
        tumour = np.linalg.norm(ras - tumour_centre, axis=-1) <= tumour_radius_mm
        return body, tumour & body

    ct_matrix = _lps_matrix(shape, spacing_mm)
    body, tumour = regions(_ras_of_voxels(shape, ct_matrix))
    ct = np.where(body, CT_HU["soft"], CT_HU["air"]) + (CT_HU["tumour"] - CT_HU["soft"]) * tumour
    ct = ct + rng.normal(0.0, 15.0, shape)

    pet_spacing = np.asarray(pet_spacing_mm, dtype=float)
    pet_shape = tuple(max(1, int(round(n))) for n in (extent / pet_spacing)[::-1])
    pet_matrix = _lps_matrix(pet_shape, pet_spacing)
    pet_body, pet_tumour = regions(_ras_of_voxels(pet_shape, pet_matrix))
    pet = PET_SUV["body"] * pet_body + (PET_SUV["tumour"] - PET_SUV["body"]) * pet_tumour
    sigma_vox = (6.0 / 2.3548) / pet_spacing[::-1]  # 6 mm FWHM, per (k, j, i) axis
    pet = ndimage.gaussian_filter(pet.astype(np.float32), sigma_vox)
    pet = pet + np.abs(rng.normal(0.0, 0.1, pet_shape))
    return (Volume.from_array(ct.astype(np.float32), ct_matrix),
            Volume.from_array(pet.astype(np.float32), pet_matrix),
            Volume.from_array(tumour.astype(np.uint8), ct_matrix))
