"""RefinementSession: one image, its interaction history, and the 2S-ICR loop.

Lifecycle (in the spirit of nnInteractive's inference session)::

    session = RefinementSession(load_model_package(path), device="auto")
    session.set_image(ct, pet, roi_center_ras=(r, a, s))   # validates, caches normalised tensors
    session.initial()                                     # t = 0: initial model
    session.add_click((r, a, s), positive=True)           # t >= 1: refine model
    session.add_click((r, a, s), True, label="gtvn")      # a class other than the first (GTVn)
    session.undo(); session.reset()
    mask = session.mask_on_ct()                           # uint8 [k, j, i] on the CT grid

The session owns the lifecycle and the history; the plan (:mod:`.policy`), the networks
(:mod:`.backend`), the inputs named by the card (:mod:`.inputs`), the refiners (:mod:`.refiners`),
the rules on every result (:mod:`.constraints`), the back-mapping (:mod:`.backmap`), the states
(:mod:`.state`) and background work (:mod:`.worker`) each have their own module.

A click refined in a window or in reduced precision is a *preview* (``StepResult.exact`` is
False); :meth:`RefinementSession.confirm` recomputes every preview state over the whole ROI in
float32, so the history becomes exactly what ``amp=False, refine_mode="full"`` gives.
Bad input raises an :class:`InteractiveRefineError` subclass and leaves the session as it was; a
call while another runs (the session is not thread-safe) raises a "busy" SessionStateError.
"""
from __future__ import annotations

import logging
import threading
import time
import warnings

import numpy as np

from . import backmap, classes, click_regions, constraints, policy
from .backend import Cancelled, InferenceBackend, detect_hardware
from .clicks import Click, click_index
from .geometry import Volume, union
from .inputs import InputContext, assemble
from .inputs import image as image_inputs
from .model_package import ModelPackage, load_model_package
from .refiners import Clicks, refine_stage
from .refiners.full import FullRefiner
from .refiners.threshold import ThresholdRefiner
from .refiners.window import DEFAULT_WINDOW, WindowRefiner
from .results import SessionResults
from .state import History, State, StepResult, exclusive  # noqa: F401 (StepResult re-exported)
from .threshold import DEFAULT_FRACTION, DEFAULT_METHOD, MIN_SUVMAX, SEARCH_RADIUS_MM, threshold_options

logger = logging.getLogger(__name__)


class RefinementSession(SessionResults):
    """Owns one PET/CT image, the model, and the click history. Deterministic.

    Args:
        package: a loaded :class:`ModelPackage`, a package folder, or None for the default model.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        refine_mode: ``"auto"`` (:mod:`.policy` decides), ``"full"`` (the whole ROI) or
            ``"fast"`` (a window around each click, :mod:`.refiners.window`).
        fast_window: edge (voxels) of the window; None: the card's ``fast_path.window_vox``,
            else :data:`~.refiners.window.DEFAULT_WINDOW`.
        region_removal: a negative click on a separate region of the mask removes that whole
            region (:mod:`.constraints`); False leaves every click to the network alone.
        amp: reduced precision (float16 on CUDA unless ``amp_dtype="bfloat16"``, bfloat16 on the
            CPU): True, False, or
            ``"auto"`` (:mod:`.policy`: on a CPU with native bfloat16, for large ROIs).
        threshold_start: the first positive click (of each class) adds the 40 % SUVmax PET
            region (:meth:`add_threshold`) where the PET has uptake there, instead of a
            refinement; None (default): as the model card says (``threshold_start``).
        local_edits: once the mask is a PET threshold region, a network click keeps only the
            changes connected to itself (:func:`.constraints.keep_connected_changes`); None
            (default): as the card says (``local_edits_after_threshold``).
        local_edits_positive: every positive network click keeps only the changes connected to
            itself; None (default): as the card says (``local_edits_positive_clicks``).
        device_path, compile: the click on the device (None: on CUDA only) and compiled refine
            networks (False, True or a mode): :class:`.backend.InferenceBackend`.
    """

    def __init__(self, package: ModelPackage | str | None = None, device: str = "auto",
                 refine_mode: str = "auto", fast_window: int | None = None,
                 region_removal: bool = True, amp: bool | str = "auto",
                 threshold_start: bool | None = None, device_path: bool | None = None,
                 compile: bool | str = False, amp_dtype: str | None = None,
                 local_edits: bool | None = None, local_edits_positive: bool | None = None):
        self._request = policy.Request(device, refine_mode, amp, amp_dtype)
        if fast_window is not None and int(fast_window) < 1:
            raise ValueError(f"fast_window must be >= 1, got {fast_window}")
        if not isinstance(package, ModelPackage):
            package = load_model_package(package)
        self.package = package
        self.card = package.spec
        self.fast_window = int(fast_window or self.card.fast_window_vox or DEFAULT_WINDOW)
        self.region_removal = bool(region_removal)
        self.threshold_start = self.card.threshold_start if threshold_start is None else bool(threshold_start)
        self.local_edits = self.card.local_edits_after_threshold if local_edits is None else bool(local_edits)
        self.local_edits_positive = (self.card.local_edits_positive_clicks if local_edits_positive is None
                                     else bool(local_edits_positive))
        hardware = detect_hardware()
        plan = policy.plan(self._request, hardware, int(np.prod(self.card.roi_size_vox)),
                           members_ratio=self._members_ratio())
        for note in plan.notes:
            warnings.warn(note, stacklevel=2)
        self.backend = InferenceBackend(package, plan, hardware, device_path, compile)
        self.history = History()
        self.image: image_inputs.ImageCache | None = None
        self._full = self._window = None
        self._lock = threading.Lock()

    @property
    def preprocess_seconds(self) -> float:
        return self._require_image().seconds

    def _members_ratio(self) -> float:
        return len(self.package.networks["refine"]) / len(self.package.networks["initial"])

    def _busy(self):
        return exclusive(self._lock)

    # --------------------------------------------------------------- the plan
    @property
    def plan(self) -> policy.Plan:
        """How the networks run now (:class:`~.policy.Plan`)."""
        return self.backend.plan

    @property
    def device(self):
        return self.backend.device

    @property
    def amp(self) -> bool:
        return self.plan.reduced_precision

    @property
    def precision(self) -> str:
        """``"float32"``, ``"bfloat16"`` (CPU) or ``"float16"`` (CUDA)."""
        return self.plan.precision

    @property
    def refine_mode(self) -> str:
        """``"full"`` or ``"fast"`` (a window; also while ``auto`` has yet to time a pass)."""
        return self.plan.refine_mode

    # ------------------------------------------------------------------ image
    def set_image(self, ct: Volume, pet: Volume | None = None, roi_center_ras=None,
                  roi_size_vox=None, allow_low_pet_coverage: bool = False) -> None:
        """Validate and cache the image (:func:`.inputs.image.prepare`); ``roi_center_ras``:
        RAS mm, ``"ct"`` (the CT's centre) or None / ``"auto"`` (placed automatically below the
        brain, :mod:`.auto_roi`; see :attr:`roi_placement`); ``roi_size_vox`` ``(k, j, i)``
        defaults to the model's ROI. A PET covering less than half the ROI is refused unless
        ``allow_low_pet_coverage``."""
        with self._busy():
            cache = image_inputs.prepare(self.card, ct, pet, roi_center_ras, roi_size_vox, self.device,
                                         allow_low_pet_coverage)
            # Commit only after every check passed: a failed call leaves the session unchanged.
            self.history.clear()
            self.image = cache
            self._full = FullRefiner(self.backend, self.card, cache)
            self.backend.networks.pop("window", None)
            self._window = WindowRefiner(self.backend, self.card, cache, self.fast_window)
            self._threshold = ThresholdRefiner(cache)

    @property
    def ct(self) -> Volume | None:
        return None if self.image is None else self.image.ct

    @property
    def grid(self):
        return None if self.image is None else self.image.grid

    @property
    def roi_placement(self):
        """Where the ROI was placed and why (:class:`.auto_roi.AutoRoi`; ``.as_dict()`` for
        reports); None before :meth:`set_image`."""
        return None if self.image is None else self.image.roi_placement


    # ------------------------------------------------------------ interaction
    def _initial_state(self, exact: bool) -> State:
        """The initial model's state; ``exact``: in float32 whatever the plan's precision."""
        t0 = time.perf_counter()
        probability = self.backend.predict("initial", self.image.on(self.device).tensor, exact=exact)
        t1 = time.perf_counter()
        ct_mask = self._to_ct(probability)
        t2 = time.perf_counter()
        timings = {"model_s": t1 - t0, "backmap_s": t2 - t1, "total_s": t2 - t0}
        return State((), (), probability, ct_mask, timings, exact=exact or not self.amp)

    def initial(self) -> StepResult:
        """Run the initial model (t = 0); clears any clicks."""
        with self._busy():
            self._require_image()
            t0 = time.perf_counter()
            self.backend.plan = policy.for_initial(self.plan, self._request)
            state = self._initial_state(exact=False)
            self.history.start(state)
            self._window.reset()
            if self.plan.refine_path == "measure":
                self._measure(state.timings, t0)
            if self.plan.warmup:  # one discarded pass: kernel selection before the first click
                t3 = time.perf_counter()
                self._full.refine(state, Clicks((), ()))
                state.timings["warmup_s"] = time.perf_counter() - t3
            center = tuple(s // 2 for s in self.grid.shape)
            if self.plan.refine_path == "window" and self._window.box_for(center) is not None:
                state.timings["calibrate_s"] = self._window.prepare(state)  # once, not per click
            else:
                self.backend.compile_in_background("refine")  # eager passes serve until it is done
            state.timings["total_s"] = time.perf_counter() - t0
            return self._result()

    def _measure(self, timings: dict, t0: float) -> None:
        """Decide the refine path from the initial pass's time (:func:`policy.plan`)."""
        measured = (timings["model_s"],)
        decided = policy.after_measure(self.plan, measured, self._members_ratio())
        if decided.retime:  # close to the limit: the first pass also builds kernels; time another
            t3 = time.perf_counter()
            self.backend.predict("initial", self.image.on(self.device).tensor)
            timings["auto_retime_s"] = time.perf_counter() - t3
            measured += (timings["auto_retime_s"],)
            decided = policy.after_measure(self.plan, measured, self._members_ratio())
        self.backend.plan = decided
        logger.info("%s refinement in %s", "whole-ROI" if decided.refine_path == "full" else
                    f"{self.fast_window}^3 window", decided.precision)

    def add_click(self, ras, positive: bool, label: str | None = None) -> StepResult:
        """Add a click at ``ras`` (RAS mm) about the class ``label`` (an output name of
        :attr:`classes`; None: the first class, or for a negative click any class) and refine;
        raises :class:`ClickError`, changing nothing, outside the ROI or for an unknown label."""
        with self._busy():
            state = self._require_state()
            t0 = time.perf_counter()
            index = self.click_index(ras)
            klass = classes.class_index(self.classes, label)
            click = Click(tuple(float(v) for v in ras), bool(positive), label=label)
            if self.threshold_start and positive and not any(  # the class's first positive click
                    c.positive and k == klass
                    for c, k in zip(state.clicks, classes.click_classes(state.clicks, self.classes))):
                click = self._threshold.promote(click, threshold_options())
            self.history.push(self._advance(state, click, index, False, t0))
            return self._result()

    def add_threshold(self, ras, fraction: float = DEFAULT_FRACTION, radius_mm: float = SEARCH_RADIUS_MM,
                      min_suvmax: float = MIN_SUVMAX, pet_is_suv: bool | None = None,
                      label: str | None = None, method: str = DEFAULT_METHOD) -> StepResult:
        """A positive click at ``ras`` whose PET threshold region (:mod:`.threshold`: PET >=
        ``fraction`` x the SUVmax within ``radius_mm``) replaces the mask; later clicks refine
        from it. ``method``: ``"fixed"`` (default, as above) or ``"background"`` (PET >= SUVbg +
        ``fraction`` x (SUVmax - SUVbg), SUVbg the median SUV 10-20 mm outside the 40 % region);
        the click stores it, so undo and replay give the same region. Refused with a
        :class:`~.errors.ThresholdError`, changing nothing, for an unknown method, without PET,
        for a PET that does not look like SUV (unless ``pet_is_suv``) or a local SUVmax below
        ``min_suvmax``. ``label``: the class whose mask the region replaces (None: the first)."""
        with self._busy():
            state = self._require_state()
            t0 = time.perf_counter()
            index = self.click_index(ras)
            classes.class_index(self.classes, label)
            options = threshold_options(fraction, radius_mm, min_suvmax, method)
            self._threshold.check(pet_is_suv)
            click = Click(tuple(float(v) for v in ras), True, "threshold", options, label)
            self.history.push(self._advance(state, click, index, False, t0))
            return self._result()

    def _refiner_for(self, click: Click, index, whole: bool):
        """The refiner for ``click``; ``whole``: the whole ROI (an exact pass, or a stage other
        than ``refine``, whose networks have no window copies)."""
        if click.kind == "threshold":
            return self._threshold, 0.0
        if whole or self.plan.refine_path != "window" or self._window.box_for(index) is None:
            return self._full, 0.0
        calibrate_s = 0.0 if self._window.ready else self._window.prepare(self.history.initial)
        return self._window, calibrate_s

    def _advance(self, state: State, click: Click, index, exact: bool, t0: float) -> State:
        """The state after ``click`` (at ``index``) from ``state``; ``exact``: float32, whole ROI."""
        positives = tuple(c.positive for c in state.clicks) + (click.positive,)
        labels = classes.click_classes(state.clicks + (click,), self.classes)
        stage = refine_stage(self.card, positives, self.image.roi_placement)
        clicks = Clicks(state.click_indices + (index,), positives, click, labels, stage)
        threshold = self.card.threshold
        t_rejections = time.perf_counter()
        arrays = click_regions.arrays_for(self.backend)  # scipy on the host, or CuPy on the GPU
        rejections = constraints.rejections_after(state.rejections, state.probability, threshold, index,
                                                  click.positive, self.region_removal, arrays)
        removal_s = time.perf_counter() - t_rejections
        refiner, calibrate_s = self._refiner_for(click, index, exact or stage != "refine")
        proposal = refiner.refine(state, clicks, exact=exact, first=state is self.history.initial)
        t1 = time.perf_counter()
        probability, reset_box = proposal.probability, None
        after_region = any(c.kind == "threshold" for c in state.clicks)
        local = (self.local_edits and after_region) or (self.local_edits_positive and click.positive)
        if local and click.kind != "threshold":
            reset_box = constraints.keep_connected_changes(probability, state.probability, index, threshold,
                                                           proposal.changed)
            self.backend.resident.update(probability, reset_box)  # a device copy stays equal
        removed_box, removed = constraints.remove_rejected(
            probability, rejections, clicks.indices, clicks.positives, state.probability, threshold, arrays)
        self.backend.resident.update(probability, removed_box)
        changed = proposal.changed
        if changed is not None:  # a removed region may reach outside the window: it changed too
            changed = union(changed, removed_box)
        t_removed = time.perf_counter()
        ct_mask = self._to_ct(probability, state, changed)
        t2 = time.perf_counter()
        memo = refiner.settle(proposal, state, probability, changed)
        timings = dict(proposal.timings)
        # backmap_s: back-mapping only (and a window's blend); removal_s: region removal
        timings["backmap_s"] = t2 - t_removed + timings.pop("blend_s", 0.0)
        timings["removal_s"] = removal_s + (t_removed - t1)
        if proposal.mode != "threshold":
            timings["transfer_s"] = self.backend.last_transfer_s
        if "norm_s" in timings:
            timings["norm_s"] += time.perf_counter() - t2
        if calibrate_s:
            timings["calibrate_s"] = calibrate_s
        timings["total_s"] = time.perf_counter() - t0
        window = None if proposal.window is None else tuple((s.start, s.stop) for s in proposal.window)
        details = dict(proposal.details)
        if stage != "refine":  # a threshold click is positive: always the refine stage
            details["stage"] = stage
        kept = click_regions.revoked_by(rejections, index) if click.positive else 0
        if kept:  # a region the user marked "not tumour" stays: this tumour point is in or beside it
            details["kept_rejected"] = kept
        return State(
            state.clicks + (click,), clicks.indices, probability, ct_mask, timings, proposal.mode,
            window, rejections, removed * float(np.prod(self.grid.spacing)) / 1000.0,
            state.exact and proposal.exact, memo, details,
        )

    def undo(self) -> StepResult:
        """Remove the last click and restore the previous mask exactly."""
        with self._busy():
            self._require_state()
            self.history.undo()
            return self._result()

    def reset(self) -> StepResult:
        """Drop every click and return to the initial model's mask."""
        with self._busy():
            self._require_state()
            self.history.reset()
            return self._result()

    # ------------------------------------------------------- exact follow-up
    @property
    def needs_confirm(self) -> bool:
        """True when the current mask is a preview that :meth:`confirm` would make exact."""
        return bool(len(self.history)) and not self.history.current.exact

    def confirm(self, cancel: threading.Event | None = None) -> StepResult | None:
        """Replace every preview state with the exact one: the initial model and each click
        since the last exact state, recomputed over the whole ROI in float32, in order.
        Afterwards the history equals, bit for bit, what a float32 session with
        ``refine_mode="full"`` gives for the same clicks; undo and the clicks are unchanged.

        ``cancel``: a :class:`threading.Event`; once set, the work stops between two network
        layers and the session is left as it was (returns None). Already exact: returns at once.
        """
        with self._busy():
            self._require_state()
            history, version = self.history.states, self.history.version
            first = next((i for i, state in enumerate(history) if not state.exact), None)
            if first is None:
                return self._result()
            t0 = time.perf_counter()
            try:
                with self.backend.cancellable(cancel):
                    states = self._recomputed(history, first)
                    self._window.settled(states[-1])  # the next window click needs its moments
            except Cancelled:
                return None
            for state, old in zip(states[first:], history[first:]):
                confirm_s = state.timings["total_s"]
                state.timings.clear()
                state.timings.update(old.timings, confirm_s=confirm_s)
            states[-1].timings["confirm_total_s"] = time.perf_counter() - t0
            if not self.history.replace(first, states[first:], version=version):
                return None
            return self._result()

    def _recomputed(self, history, first: int) -> list:
        states = list(history[:first])
        if first == 0:
            states.append(self._initial_state(exact=True))
        for old in history[max(first, 1):]:
            click, index = old.clicks[-1], old.click_indices[-1]
            states.append(self._advance(states[-1], click, index, True, time.perf_counter()))
        return states

    # ---------------------------------------------------------------- helpers
    def refine_input(self, state: State | None = None):
        """The refine network's whole-ROI input ``[1, C, k, j, i]`` for ``state`` (default: the
        current one) without a new click, in the card's channel order."""
        state = state or self._require_state()
        ctx = InputContext(self.image.on(self.device), state.probability, state.click_indices,
                           tuple(c.positive for c in state.clicks), None,
                           classes.click_classes(state.clicks, self.classes))
        return assemble(self.card.stages["refine"], ctx, tuple(slice(0, n) for n in self.grid.shape))

    def click_index(self, ras) -> tuple[int, int, int]:
        """Working-grid voxel ``(k, j, i)`` of a RAS point; :class:`ClickError` if outside."""
        return click_index(self._require_image().ct.grid, self.grid, ras)

    def _to_ct(self, probability, previous: State | None = None, box=None) -> np.ndarray:
        copies = self.backend.resident if self.backend.device_path else None  # None: numpy, bit-exact
        return backmap.to_ct(probability, self.card.threshold, self.grid, self.image.ct_box_grid,
                             previous, box, copies=copies, device=self.device, labels=self.card.labels)
