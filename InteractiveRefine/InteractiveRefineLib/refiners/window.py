"""Refinement in a window around the click (FocalClick-style), for large ROIs on the CPU.

1. The window is a ``W^3`` box centred at the click, aligned to the network's stride product (so
   its down-sampling grid coincides with the ROI's) and shifted to stay inside the ROI.
2. Its input channels are built only there (the guidance is exactly the ROI's, cropped).
3. It runs copies of the refine members whose instance norms are frozen
   (:func:`~..netcopies.frozen_network`): the statistics come from one whole-ROI calibration pass
   at the initial state (no click), except the first norm's, which are kept exact for each
   click's whole-ROI input: the first norm's input is a convolution of the network input, so its
   moments change only near where the input changed (:func:`~..netcopies.conv_moments`), and
   each state carries them forward (``memo["moments"]``).
4. The window's output is blended into the previous probability with a linear ramp of
   :data:`MARGIN` voxels on the faces inside the ROI; nothing outside the window changes, except
   on the first click after the initial state: there the outside takes the calibration pass's
   output (the refine network's own prediction with no click), which is what a whole-ROI pass
   gives far from the click.

A click whose window would be the whole ROI, or on an ROI larger than the model's
(sliding-window inference), is refined by the full refiner instead (:meth:`box_for`); so is every
click of a model with more than one output class (GTVp and GTVn): the window path is one-class.
Deterministic: the same clicks give the same mask.
"""
from __future__ import annotations

import time

import numpy as np

from .. import geometry, netcopies
from ..backend import to_float16
from ..inputs import InputContext, assemble
from ..inputs.interaction import click_kernel
from . import Proposal

#: Default window edge (voxels); a card may set its own (``fast_path.window_vox``).
DEFAULT_WINDOW = 64
#: Width (voxels) of the blending ramp on window faces inside the ROI.
MARGIN = 8


class WindowRefiner:
    def __init__(self, backend, card, image, edge: int):
        self.backend, self.card, self.image = backend, card, image
        self.stage = card.stages["refine"]
        self.edge = int(edge)
        self.divisor = card.size_divisor
        self._norms = (None, [])  # (the refine members they belong to, their first norms)
        self._far_field = None  # the calibration pass's probability
        self._kernel = click_kernel(next(s for s in self.stage.inputs if s.name == "clicks_positive"))

    @property
    def _first_norms(self) -> list:
        """Per refine member, ``(name, conv)`` of its first instance norm (the backend's current
        copies: an out-of-memory fallback replaces them)."""
        members = self.backend.networks["refine"]
        if self._norms[0] is not members:
            self._norms = (members, [netcopies.first_norm(net) for net in members])
        return self._norms[1]

    @property
    def shape(self) -> tuple:
        return tuple(self.image.grid.shape)

    @property
    def ready(self) -> bool:
        return "window" in self.backend.networks

    def box_for(self, index):
        """The window for a click at working-grid ``index``, or None when the full refiner
        should run (the window would cover the ROI, the ROI is not the model's, or the model has
        several output classes)."""
        if self.shape != tuple(self.card.roi_size_vox) or len(self.card.outputs) > 1:
            return None  # sliding-window ROIs and multi-class models: the whole-ROI path
        edge = max(self.divisor, self.edge // self.divisor * self.divisor)
        box = geometry.window_box(index, self.shape, edge, align=self.divisor)
        return None if geometry.covers(box, self.shape) else box

    def _input(self, probability, indices, positives, box):
        ctx = InputContext(self.image.on(self.backend.device), probability, tuple(indices), tuple(positives))
        return assemble(self.stage, ctx, box)

    # ----------------------------------------------------------- calibration
    def prepare(self, initial) -> float:
        """Build the window networks from one whole-ROI pass at ``initial`` (once per initial
        segmentation); returns the seconds spent."""
        if self.ready:
            return 0.0
        t0 = time.perf_counter()
        whole = tuple(slice(0, n) for n in self.shape)
        x = self._input(initial.probability, (), (), whole)
        if self.backend.channels_last:
            import torch

            x = x.contiguous(memory_format=torch.channels_last_3d)
        recorded, self._far_field = self.backend.calibrate("refine", x)
        cpu = self.backend.device.type == "cpu"
        self.backend.networks["window"] = [
            netcopies.frozen_network(net, {k: (m.clone(), v.clone()) for k, (m, v) in stats.items()},
                                     cpu_layout=cpu, unfolded=(name,))
            for net, stats, (name, _) in zip(self.backend.networks["refine"], recorded, self._first_norms)
        ]
        self.moments(initial)
        return time.perf_counter() - t0

    def reset(self) -> None:
        """Forget the calibration (a new initial segmentation follows)."""
        self.backend.networks.pop("window", None)
        self._far_field = None

    def moments(self, state) -> list:
        """Per refine member, ``(sum, sum of squares)`` of the first norm's input over the ROI
        for ``state``'s next-click input without the click (computed once per state)."""
        if "moments" not in state.memo:
            whole = tuple(slice(0, n) for n in self.shape)
            positives = [c.positive for c in state.clicks]
            import torch

            with torch.inference_mode():
                x = self._input(state.probability, state.click_indices, positives, whole)
                x = x.to(self.backend.device)
                state.memo["moments"] = [netcopies.conv_moments(conv, x) for _, conv in self._first_norms]
        return state.memo["moments"]

    def _moments_after(self, moments, a, b, box):
        """``moments`` of the input built from ``a`` = (probability, indices, positives) updated
        to the input built from ``b``; the two differ only inside ``box`` (exact: only outputs
        within the first convolution's reach of ``box`` change, reading inputs within it)."""
        import torch

        if box is None:
            return moments
        reach = max((k - 1) // 2 * d for _, conv in self._first_norms
                    for k, d in zip(conv.kernel_size, conv.dilation))
        out_box = geometry.expand_box(box, self.shape, reach)
        source = geometry.expand_box(out_box, self.shape, reach)
        local = tuple(slice(o.start - s.start, o.stop - s.start) for o, s in zip(out_box, source))
        with torch.inference_mode():
            before = self._input(*a, source).to(self.backend.device)
            after = self._input(*b, source).to(self.backend.device)
            updated = []
            for (_, conv), (s1, s2) in zip(self._first_norms, moments):
                a1, a2 = netcopies.conv_moments(conv, before, local)
                b1, b2 = netcopies.conv_moments(conv, after, local)
                updated.append((s1 - a1 + b1, s2 - a2 + b2))
        return updated

    def _set_first_norms(self, moments) -> None:
        count = int(np.prod(self.shape))
        for window_net, net, (name, _), m in zip(
            self.backend.networks["window"], self.backend.networks["refine"], self._first_norms, moments
        ):
            netcopies.set_norm_stats(window_net, net, name, *netcopies.moments_to_stats(m, count))

    # ---------------------------------------------------------------- refine
    def refine(self, state, clicks, *, exact: bool = False, first: bool = False) -> Proposal:
        """The window's refinement of ``state`` after ``clicks``; call :meth:`prepare` first."""
        box = self.box_for(clicks.indices[-1])
        t_norm = time.perf_counter()
        previous = (state.probability, state.click_indices, [c.positive for c in state.clicks])
        click_moments = self._moments_after(
            self.moments(state), previous, (state.probability, clicks.indices, clicks.positives),
            geometry.support_box(clicks.indices[-1:], self.shape, self._kernel),
        )
        self._set_first_norms(click_moments)
        t1 = time.perf_counter()
        x = self._input(state.probability, clicks.indices, clicks.positives, box)
        t2 = time.perf_counter()
        window_probability = self.backend.predict("refine", x, window=True)
        t3 = time.perf_counter()
        far = self._far_field if first else None
        base = state.probability if far is None else far
        weights = geometry.blend_weights(box, self.shape, MARGIN)
        probability = base.copy()
        blended = weights * window_probability + (1.0 - weights) * base[box].astype(np.float32)
        probability[box] = to_float16(blended)
        timings = {"map_s": t2 - t1, "model_s": t3 - t2, "norm_s": t1 - t_norm,
                   "blend_s": time.perf_counter() - t3}
        changed = box if far is None else tuple(slice(0, n) for n in self.shape)
        memo = {"click_moments": click_moments, "far": far is not None,
                "clicks": (tuple(clicks.indices), list(clicks.positives))}
        return Proposal(probability, changed, box, False, timings, memo, mode="fast")

    def settle(self, proposal, state, probability, changed) -> dict:
        """The new state's moments, carried forward from the click's (the probability changed
        only inside ``changed``); none after the first click (its outside changed too)."""
        if proposal.memo.get("far"):
            return {}
        clicks = proposal.memo["clicks"]
        moments = self._moments_after(
            proposal.memo["click_moments"], (state.probability,) + clicks, (probability,) + clicks, changed
        )
        return {"moments": moments}

    def settled(self, state) -> None:
        """After a confirm: the next window click needs ``state``'s moments; compute them now."""
        if self.ready:
            self.moments(state)
