"""Intensity presets, chosen by the model card's ``preprocessing.intensity_preset``.

- ``"2sicr"`` (2S-ICR paper, section 4.1): CT windowed to [-200, 200] HU and scaled to [-1, 1];
  PET z-scored over the working ROI.
- ``"clinical"`` (HN-UISeg, plug-and-play): CT clipped to [-1024, 3071] HU and scaled to [-1, 1];
  PET in SUVbw clipped to [0, 50] and scaled to [0, 1].
"""
from __future__ import annotations

import numpy as np

from . import geometry
from .errors import InteractiveRefineError

#: CT value outside the scanned field (air) and PET value outside the PET field.
CT_OUTSIDE_HU = -1024.0
PET_OUTSIDE = 0.0

PRESETS: dict[str, dict] = {
    "2sicr": {"ct_window": (-200.0, 200.0), "pet": "zscore"},
    "clinical": {"ct_window": (-1024.0, 3071.0), "pet": "suv_clip", "suv_max": 50.0},
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise InteractiveRefineError(
            f"unknown intensity preset {name!r}; expected one of {sorted(PRESETS)}"
        )
    return PRESETS[name]


def normalize_ct(ct: np.ndarray, preset_name: str = "2sicr") -> np.ndarray:
    """Clip CT (HU) to the preset's window and scale it linearly to [-1, 1] (float32)."""
    low, high = preset(preset_name)["ct_window"]
    clipped = np.clip(np.asarray(ct, dtype=np.float32), low, high)
    return ((clipped - low) / (high - low) * 2.0 - 1.0).astype(np.float32)


def normalize_pet(pet: np.ndarray, preset_name: str = "2sicr") -> np.ndarray:
    """Normalise PET (SUV): z-score over the given array, or SUV clipped and scaled to [0, 1]."""
    settings = preset(preset_name)
    pet = np.asarray(pet, dtype=np.float32)
    offset, scale = pet_to_suv(pet, preset_name)
    if settings["pet"] == "zscore":
        return ((pet - offset) / scale).astype(np.float32)
    return (np.clip(pet, 0.0, settings["suv_max"]) / scale).astype(np.float32)


def pet_to_suv(pet: np.ndarray, preset_name: str = "2sicr") -> tuple:
    """``(offset, scale)`` with SUV = channel x scale + offset for the PET channel
    :func:`normalize_pet` makes of ``pet`` (exact below the preset's clipping), so that a
    training sample's augmented channel gives back SUV values (the ``pet_region`` input)."""
    settings = preset(preset_name)
    if settings["pet"] == "zscore":
        pet = np.asarray(pet, dtype=np.float32)
        return float(pet.mean()), max(float(pet.std()), 1e-6)
    return 0.0, float(settings["suv_max"])


def normalize_channels(ct: np.ndarray, pet: np.ndarray | None, preset_name: str) -> np.ndarray:
    """Stack the model's image channels ``[C, k, j, i]``: CT, then PET when given."""
    channels = [normalize_ct(ct, preset_name)]
    if pet is not None:
        channels.append(normalize_pet(pet, preset_name))
    return np.stack(channels)


def channels_on_grid(ct, pet, grid, preset_name: str) -> np.ndarray:
    """The model's normalised image channels ``[C, k, j, i]`` on ``grid`` (the working grid).

    CT and (optional) PET volumes are resampled linearly in physical space, outside their
    fields filled with air / zero uptake, then normalised with the preset. The session and the
    training cache both call this, so inference sees exactly what training saw.
    """
    return normalize_channels(*images_on_grid(ct, pet, grid), preset_name)


def images_on_grid(ct, pet, grid) -> tuple:
    """``(ct, pet)`` resampled linearly onto ``grid`` (HU and SUV, float32 ``[k, j, i]``; pet None
    without one), outside their fields filled with air / zero uptake."""
    ct_roi = geometry.resample(ct.array, ct.grid, grid, order=1, cval=CT_OUTSIDE_HU)
    ct_roi = ct_roi.astype(np.float32, copy=False)
    pet_roi = None
    if pet is not None:
        pet_roi = geometry.resample(pet.array, pet.grid, grid, order=1, cval=PET_OUTSIDE)
        pet_roi = pet_roi.astype(np.float32, copy=False)
    return ct_roi, pet_roi
