"""The paper's refinement: the refine network (or the stage the clicks name) on the whole ROI."""
from __future__ import annotations

import time

from ..inputs import InputContext, assemble
from . import Proposal


class FullRefiner:
    """Refines the whole ROI; ``exact`` or a float32 plan gives the exact result.

    The whole-ROI input is one persistent tensor whose static channels (the image) were copied
    once, in the networks' memory layout."""

    def __init__(self, backend, card, image):
        self.backend, self.card, self.image = backend, card, image
        self._input = None

    def whole_input(self, probability, clicks):
        """The refine stage's input on the whole ROI (valid until the next call)."""
        import torch

        image = self.image.on(self.backend.device)
        resident = self.backend.resident.get(probability) if self.backend.device_path else None
        ctx = InputContext(image, probability, clicks.indices, clicks.positives, resident, clicks.labels)
        box = tuple(slice(0, n) for n in image.grid.shape)
        stage = self.card.stages["refine"]
        fresh = self._input is None or self._input.device != self.backend.device
        if fresh:
            layout = torch.channels_last_3d if self.backend.channels_last else torch.contiguous_format
            self._input = torch.zeros((1, stage.in_channels) + image.grid.shape, dtype=torch.float32,
                                      device=self.backend.device).contiguous(memory_format=layout)
        return assemble(stage, ctx, box, self._input, static=fresh)

    def prepare(self, initial) -> float:
        return 0.0

    def refine(self, state, clicks, *, exact: bool = False, first: bool = False) -> Proposal:
        t0 = time.perf_counter()
        x = self.whole_input(state.probability, clicks)
        self.backend.synchronize()
        t1 = time.perf_counter()
        probability = self.backend.predict(clicks.stage, x, exact=exact)
        t2 = time.perf_counter()
        # compiled networks are float32 but not bit-equal to the eager ones: confirm() redoes them
        precise = exact or not (self.backend.plan.reduced_precision or self.backend.last_compiled)
        return Proposal(probability, None, None, precise, {"map_s": t1 - t0, "model_s": t2 - t1})

    def settle(self, proposal, state, probability, changed) -> dict:
        return {}

    def settled(self, state) -> None:
        pass

