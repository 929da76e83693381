"""The ``pet_region`` input: what a one-click PET threshold tool would give at the positive clicks.

For each "tumour" click, the connected region of PET >= ``fraction`` x the local SUVmax within
``radius_mm`` (:func:`..threshold.region_in_array`, on the working grid's SUV), and the union of
these regions as one 0/1 channel. A refine network that reads it starts from the classical
40 %-SUVmax answer and learns where to deviate from it (the threshold-floor issue). Options (card
input ``options``): ``fraction`` 0.4, ``radius_mm`` 10, ``min_suvmax`` 2.0 (a click with less
uptake adds nothing). The training package builds the same channel with :func:`region_channel`.
"""
from __future__ import annotations

import numpy as np

from ..threshold import DEFAULT_FRACTION, MIN_SUVMAX, SEARCH_RADIUS_MM, region_in_array
from . import register

#: The options of a ``pet_region`` input and their defaults.
DEFAULTS = {"fraction": DEFAULT_FRACTION, "radius_mm": SEARCH_RADIUS_MM, "min_suvmax": MIN_SUVMAX}


def options_of(options) -> dict:
    """The input's options with defaults filled in (unknown keys are an error)."""
    unknown = sorted(set(options or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"pet_region options {unknown} are unknown; known: {sorted(DEFAULTS)}")
    return {key: float((options or {}).get(key, value)) for key, value in DEFAULTS.items()}


def region_channel(suv: np.ndarray, positives, spacing_kji, options=None,
                   memo: dict | None = None) -> np.ndarray:
    """The channel (float32 ``[k, j, i]``, 0/1): the union of the regions of the positive clicks
    ``positives`` (working-grid indices ``(k, j, i)``). ``memo``: a dict the caller keeps for one
    ``suv`` so that each click's region is found once."""
    settings = options_of(options)
    out = np.zeros(suv.shape, dtype=bool)
    for index in positives:
        key = tuple(int(v) for v in np.rint(np.asarray(index, float)))
        if memo is not None and key in memo:
            region = memo[key]
        else:
            region = region_in_array(suv, key, spacing_kji, settings["fraction"], settings["radius_mm"],
                                     settings["min_suvmax"])
            if memo is not None:
                memo[key] = region
        if region is not None:
            out |= region
    return out.astype(np.float32)


@register("pet_region")
class PetRegion:
    static, local = False, False

    def fill(self, out, spec, ctx, box) -> None:
        import torch

        suv = ctx.image.pet_suv
        if suv is None:  # no PET (a pet_optional model run on CT alone): no region, as in training
            out.zero_()
            return
        memo = ctx.image.derived.setdefault("pet_region", {})  # each click's region, found once
        positives = [ix for ix, p in zip(ctx.indices, ctx.positives) if bool(p)]
        spacing = tuple(float(v) for v in ctx.image.grid.spacing[::-1])
        channel = region_channel(suv, positives, spacing, spec.options, memo)
        out[0].copy_(torch.from_numpy(channel[tuple(box)]))
