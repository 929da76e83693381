"""A threshold click: the PET region around a positive click replaces the mask.

The region (:func:`~..threshold.threshold_region`, on the PET grid; its method, fixed fraction
or background-corrected, from the click's options) is resampled onto the working
grid with linear interpolation, so its probability is 1 inside, 0 outside and in between on its
border, and the back-mapping thresholds it like any model output. It becomes the previous
probability of the next refinement; the click itself is also a positive click of the guidance.
With several output classes it replaces the probability of the click's class only (GTVp unless
the click has another label).
"""
from __future__ import annotations

import time

import numpy as np

from .. import geometry
from ..backend import to_float16
from ..errors import ThresholdError
from ..threshold import DEFAULT_METHOD, check_suv, threshold_region
from . import Proposal


class ThresholdRefiner:
    def __init__(self, image):
        self.image = image
        self._pet_checked = False
        self._suv_median = None

    def check(self, pet_is_suv: bool | None) -> None:
        """Refuse, before anything changes, an image without PET or a PET that is not SUV
        (unless ``pet_is_suv`` confirms it)."""
        from ..inputs.image import check_image

        if self.image.pet is None:
            raise ThresholdError("a threshold region needs a PET image; this session has none")
        if not self._pet_checked:  # once per image: the PET does not change
            check_image(self.image.pet, "PET")
            self._pet_checked = True
        if not pet_is_suv and self._suv_median is None:
            self._suv_median = check_suv(self.image.pet)

    def promote(self, click, options) -> object:
        """``click`` as a threshold click (``options``: fraction, radius_mm, min_suvmax and, unless
        fixed, method; :func:`~..threshold.threshold_options`) when the
        image has a PET in SUV with uptake near it; else ``click`` unchanged."""
        from dataclasses import replace

        from ..threshold import local_peak

        settings = dict(options)
        try:
            self.check(None)
            _, suvmax = local_peak(self.image.pet, click.ras, settings["radius_mm"])
        except ThresholdError:
            return click
        if suvmax < settings["min_suvmax"]:
            return click
        return replace(click, kind="threshold", options=tuple(options))

    def prepare(self, initial) -> float:
        return 0.0

    def refine(self, state, clicks, *, exact: bool = False, first: bool = False) -> Proposal:
        t0 = time.perf_counter()
        options = dict(clicks.latest.options)
        region = threshold_region(self.image.pet, clicks.latest.ras, options["fraction"],
                                  options["radius_mm"], options["min_suvmax"],
                                  options.get("method", DEFAULT_METHOD))
        t1 = time.perf_counter()
        on_grid = geometry.resample(region.mask.astype(np.float32), self.image.pet.grid, self.image.grid,
                                    order=1, cval=0.0)
        probability = to_float16(np.clip(on_grid, 0.0, 1.0))
        if state.probability.ndim == 4:  # several classes: the region replaces its class's channel
            label = clicks.labels[-1] if clicks.labels else 0
            region_probability, probability = probability, state.probability.copy()
            probability[label] = region_probability
        timings = {"map_s": time.perf_counter() - t1, "model_s": t1 - t0}
        return Proposal(probability, None, None, True, timings, mode="threshold",
                        details={"threshold": region.summary()})

    def settle(self, proposal, state, probability, changed) -> dict:
        return {}

    def settled(self, state) -> None:
        pass
