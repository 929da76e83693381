"""RefinementSession: one image, its interaction history, and the 2S-ICR loop.

Lifecycle (in the spirit of nnInteractive's inference session)::

    session = RefinementSession(load_model_package(path), device="auto")
    session.set_image(ct, pet, roi_center_ras=(r, a, s))   # validates, caches normalised tensors
    session.initial()                                     # t = 0: initial model
    session.add_click((r, a, s), positive=True)           # t >= 1: refine model
    session.undo(); session.reset()
    mask = session.mask_on_ct()                           # uint8 [k, j, i] on the CT grid

The session caches the normalised PET/CT tensors on the device; a click never re-reads or
re-preprocesses the image. Every state (clicks, probability, CT-grid mask) is kept, so undo
restores the previous mask bit for bit. Bad input raises an :class:`InteractiveRefineError`
subclass and leaves the session as it was.

Refinement modes (``refine_mode``; ``add_click(..., mode=...)`` overrides it per click):

- ``"full"``: the refine network on the whole ROI (the paper's method; tens of ms on a GPU,
  ~5-8 s for 144^3 on 2 CPU cores).
- ``"fast"``: the network on a window around the click only (:mod:`.fast_refine`); the first
  instance norm's statistics are kept exact for each click's full-ROI input (``fast_norm=
  "tracked"``), the deeper ones come from a full-ROI calibration pass that :meth:`initial` runs
  once; everything outside the window stays as it was, and only the CT voxels under the window
  are re-mapped. ~0.5 s per click on 2 CPU cores for the paper's 144^3. Except on the first
  click after the initial state (with tracked or frozen statistics, which need the calibration
  pass): there the outside takes the calibration pass's output (the
  refine network's prediction with no click), which is what a full-ROI pass gives far from the
  click, since the refine network also corrects the initial model's mask where nobody clicked.
  With ``fast_grow`` (off by default), a click whose change reaches the window's faces is
  refined again in a 1.5 times larger window, up to the whole ROI: closer to full-ROI
  refinement, but a click on a large tumour then costs more than a full pass.
- ``"auto"`` (default): full on CUDA and for ROIs of at most :data:`FAST_AUTO_MIN_VOXELS` voxels
  (the shipped 72^3 model refines its whole ROI in ~0.3 s on 2 CPU cores, exactly). For larger
  ROIs on the CPU (the paper's 144^3) :meth:`initial` decides from its own pass, which runs a
  network of the same size on the same ROI: full when a whole-ROI pass takes at most
  :data:`AUTO_FULL_SECONDS` on this machine (with ``amp``, bfloat16 where the CPU has it), fast
  otherwise. The decision holds for the image; ``refine_mode`` and each step's ``mode`` say which.

After the network, in both modes, regions that negative clicks rejected are removed once a
positive click marks the tumour elsewhere (``region_removal``, :mod:`.click_regions`).

A click refined in a window or in reduced precision (``amp``) is a *preview*
(``StepResult.exact`` is False). :meth:`RefinementSession.confirm` recomputes every preview state
over the whole ROI in float32, in order, so the history becomes exactly what ``amp=False``,
``refine_mode="full"`` gives for the same clicks; :meth:`~RefinementSession.confirm_in_background`
runs it in a thread that the next change to the history cancels. A user sees the preview in
well under a second on 2 CPU cores and the exact mask once the float32 pass is done.

The CT mask of every state is the back-mapping of that state's stored (float16) probability,
so both modes, undo and replay agree on it.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import click_regions, fast_refine, geometry
from .clicks import Click, gaussian_kernel
from .errors import ClickError, ImageError, SessionStateError
from .geometry import Grid, Volume
from .intensity import CT_OUTSIDE_HU, PET_OUTSIDE, channels_on_grid  # noqa: F401 (re-exported)
from .model_package import ModelPackage, load_model_package

logger = logging.getLogger(__name__)


REFINE_MODES = ("auto", "full", "fast")
FAST_NORMS = ("tracked", "frozen", "window")
#: ``refine_mode="auto"`` uses the fast path on the CPU only for ROIs larger than this (96^3):
#: below it a full-ROI pass already takes about a second or less on 2 cores, and is exact.
FAST_AUTO_MIN_VOXELS = 96**3
#: ``refine_mode="auto"`` on the CPU refines larger ROIs in full when the initial model's pass
#: (the refine network's size, same ROI, same precision) took at most this long: an exact click in
#: about a second is worth more than a windowed approximation in a fifth of it, since a window
#: misses what the network changes beyond it (README, "Performance"); slower, in a window. A first
#: pass of up to twice this is timed once more (the process's first pass also builds kernels).
AUTO_FULL_SECONDS = 1.0


def resolve_device(requested: str = "auto"):
    """``"auto"`` picks CUDA when available; ``"cuda"`` without CUDA falls back to CPU with a warning."""
    import torch

    if requested not in ("auto", "cpu", "cuda") and not str(requested).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if requested == "auto" else requested)
    if requested != "auto":
        warnings.warn("CUDA was requested but is not available; running on the CPU", stacklevel=2)
    return torch.device("cpu")


@dataclass(frozen=True)
class StepResult:
    """What one step produced: step number (0 = initial), clicks so far, timings (seconds)."""

    step: int
    n_clicks: int
    timings: dict
    voxels: int
    volume_ml: float
    device: str
    mode: str = "full"
    #: working-grid ``(start, stop)`` per axis ``(k, j, i)`` that a fast click refined, else None
    window: tuple | None = None
    #: mL of the mask this click removed as regions marked "not tumour" (:mod:`.click_regions`)
    removed_ml: float = 0.0
    #: the mask is the float32 whole-ROI result of these clicks (what ``amp=False``,
    #: ``refine_mode="full"`` gives); False for a preview in reduced precision or from a window,
    #: which :meth:`RefinementSession.confirm` turns into the exact one
    exact: bool = True


@dataclass
class _State:
    clicks: tuple
    click_indices: tuple  # (k, j, i) on the working grid, one per click
    probability: np.ndarray  # float16 [k, j, i] on the working grid
    ct_mask: np.ndarray  # uint8 on the CT box
    timings: dict = field(default_factory=dict)
    mode: str = "full"
    window: tuple | None = None
    #: boolean working-grid regions rejected by negative clicks so far (:mod:`.click_regions`)
    rejections: tuple = ()
    removed_ml: float = 0.0
    #: per refine member, ``(sum, sum of squares)`` of the first instance norm's input over the
    #: ROI for this state's next-click input without the click (``"tracked"`` fast path), or None
    moments: list | None = None
    #: computed in float32 over the whole ROI from an exact state (see ``StepResult.exact``)
    exact: bool = True


class RefinementSession:
    """Owns one PET/CT image, the model, and the click history. Deterministic.

    Args:
        package: a loaded :class:`ModelPackage`, a package folder, or None for the default model.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        refine_mode: ``"auto"`` (full, except on the CPU for ROIs above 96^3 whose whole-ROI pass
            takes over :data:`AUTO_FULL_SECONDS`: fast), ``"full"`` or ``"fast"``.
        fast_window: edge (voxels) of the fast path's cubic window; None (default): the model
            card's ``fast_path.window_vox``, else 64, which keeps a click of the paper's network
            under a second on 2 CPU cores (module :mod:`.fast_refine` has the measurements).
        fast_margin: voxels of linear blending on the window's faces inside the ROI.
        fast_grow: when a window's prediction changes the mask at its inner faces (the click's
            change reaches past it), retry with a 1.5 times larger window, and refine the whole
            ROI once a window would cover it (:func:`fast_refine.leaks`).
        fast_norm: ``"tracked"`` (default: the first instance norm's statistics are kept exact
            for the current input, the deeper ones come from the full-ROI calibration pass),
            ``"frozen"`` (all from the calibration pass) or ``"window"`` (the window's own
            statistics; no calibration, least faithful).
        region_removal: a negative click on a separate region of the mask removes that whole
            region (:mod:`.click_regions`); False leaves every click to the network alone.
        amp: reduced-precision inference: ``True`` runs the networks under float16 autocast on
            CUDA and bfloat16 autocast on the CPU; ``False`` keeps float32 (the reference);
            ``"auto"`` (default) turns it on only on a CPU with native bfloat16 arithmetic
            (AVX512-BF16 or AMX) and for ROIs above 96^3, where it nearly halves a full pass
            (:func:`cpu_bfloat16_supported`; README "Performance" has the accuracy check).
        cudnn_benchmark: on CUDA, let cuDNN pick the fastest convolution algorithms for the
            session's fixed input shapes (a one-time tuning cost, paid in :meth:`initial`).
    """

    def __init__(
        self,
        package: ModelPackage | str | None = None,
        device: str = "auto",
        refine_mode: str = "auto",
        fast_window: int | None = None,
        fast_margin: int = fast_refine.DEFAULT_MARGIN,
        fast_norm: str = "tracked",
        fast_grow: bool = False,
        region_removal: bool = True,
        amp: bool | str = "auto",
        cudnn_benchmark: bool = True,
    ):
        import torch

        if refine_mode not in REFINE_MODES:
            raise ValueError(f"refine_mode must be one of {REFINE_MODES}, got {refine_mode!r}")
        if fast_norm not in FAST_NORMS:
            raise ValueError(f"fast_norm must be one of {FAST_NORMS}, got {fast_norm!r}")
        if (fast_window is not None and int(fast_window) < 1) or int(fast_margin) < 0:
            raise ValueError(
                f"fast_window must be >= 1 and fast_margin >= 0, got {fast_window} and {fast_margin}"
            )
        if not isinstance(package, ModelPackage):
            package = load_model_package(package)
        if fast_window is None:
            fast_window = package.fast_window_vox or fast_refine.DEFAULT_WINDOW
        self.package = package
        self.device = resolve_device(device)
        self._refine_mode = refine_mode
        self._large_roi = int(np.prod(package.roi_size_vox)) > FAST_AUTO_MIN_VOXELS
        self.fast_window = int(fast_window)
        self.fast_margin = int(fast_margin)
        self.fast_norm = fast_norm
        self.fast_grow = bool(fast_grow)
        self.region_removal = bool(region_removal)
        if amp not in (True, False, "auto"):
            raise ValueError(f"amp must be True, False or 'auto', got {amp!r}")
        if amp == "auto":
            amp = self.device.type == "cpu" and self._large_roi and cpu_bfloat16_supported()
        self.amp = bool(amp)
        if self.device.type == "cuda" and cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self._divisor = _size_divisor(package.card["network"])
        self._first_norm_cache = None
        self._confirm_job = None  # (thread, cancel event) of confirm_in_background()
        self._networks = {
            stage: [self._placed(net) for net in nets] for stage, nets in package.networks.items()
        }
        clicks_card = package.card["clicks"]
        self._kernel = gaussian_kernel(
            float(clicks_card.get("sigma_vox", 2.0)), float(clicks_card.get("truncate", 4.0))
        )
        self._torch = torch
        self._clear()

    # ------------------------------------------------------------------ image
    def _clear(self) -> None:
        self.cancel_confirm()
        self.ct: Volume | None = None
        self.grid: Grid | None = None
        self._image = None  # torch [1, C, k, j, i] on device
        self._ct_box = None
        self._ct_box_grid: Grid | None = None
        self._history: list[_State] = []
        self._window_nets = None  # per refine member: the fast path's network copy
        self._whole_input = None  # the refine networks' whole-ROI input (_refine_input(reuse=True))
        self._auto_full = False  # "auto" on a large ROI: initial() found a full pass fast enough
        #: the calibration pass's probability (refine network, no click; float16 ROI), or None
        self._far_field = None

    @property
    def refine_mode(self) -> str:
        """The mode a click uses unless told otherwise: ``"fast"`` or ``"full"``."""
        if self._refine_mode == "auto":
            if self.device.type != "cpu" or not self._large_roi or self._auto_full:
                return "full"
            return "fast"
        return self._refine_mode

    @property
    def precision(self) -> str:
        """What the networks compute in: ``"float32"``, or with ``amp`` ``"bfloat16"`` (CPU) or
        ``"float16"`` (CUDA)."""
        if not self.amp:
            return "float32"
        return "float16" if self.device.type == "cuda" else "bfloat16"

    def set_image(
        self,
        ct: Volume,
        pet: Volume | None = None,
        roi_center_ras=None,
        roi_size_vox=None,
    ) -> None:
        """Validate and cache the image; ``roi_center_ras`` defaults to the CT's centre.

        ``roi_size_vox`` (k, j, i) defaults to the model's ROI; a larger ROI is segmented by
        sliding-window inference. PET is resampled onto the working grid in physical space.
        """
        t0 = time.perf_counter()
        _check_image(ct, "CT")
        if self.package.needs_pet:
            if pet is None:
                raise ImageError("this model needs a PET image; none was given")
            _check_image(pet, "PET")
        center = ct.grid.center_ras() if roi_center_ras is None else np.asarray(roi_center_ras, float)
        if center.shape != (3,) or not np.all(np.isfinite(center)):
            raise ImageError(f"ROI centre must be three finite RAS numbers, got {roi_center_ras!r}")
        if not ct.grid.contains_index(ct.grid.ras_to_index(center)):
            raise ImageError(f"ROI centre RAS {np.round(center, 1).tolist()} lies outside the CT")
        size = tuple(int(v) for v in (roi_size_vox or self.package.roi_size_vox))
        divisor = _size_divisor(self.package.card["network"])
        if any(s < r for s, r in zip(size, self.package.roi_size_vox)) or any(s % divisor for s in size):
            raise ImageError(
                f"ROI size {size} must be at least the model's {self.package.roi_size_vox} and a "
                f"multiple of {divisor} voxels"
            )
        grid = geometry.working_grid(ct.grid, center, size, self.package.spacing_mm)
        if self.package.needs_pet:
            fraction = geometry.coverage(pet.grid, grid)
            if fraction == 0.0:
                raise ImageError(
                    "the PET does not overlap the CT region of interest: check that both images "
                    "belong to the same study and frame of reference"
                )
            if fraction < 0.5:
                logger.warning("the PET covers only %.0f%% of the ROI", 100 * fraction)
        pet_used = pet if self.package.needs_pet else None
        channels = channels_on_grid(ct, pet_used, grid, self.package.intensity_preset)
        ct_box = geometry.bounding_box_in(ct.grid, grid)
        image = self._torch.from_numpy(channels[None]).to(self.device)
        # Commit only after every check passed: a failed call leaves the session unchanged.
        self._clear()
        self.ct, self.grid, self._image = ct, grid, image
        self._ct_box, self._ct_box_grid = ct_box, geometry.sub_grid(ct.grid, ct_box)
        self.preprocess_seconds = time.perf_counter() - t0

    # -------------------------------------------------------------- inference
    def _predict(self, stage: str, x, window: bool = False, exact: bool = False):
        """Mean sigmoid probability of the stage's members, ``[k, j, i]`` numpy: float16 (what
        the history stores) for the ROI, float32 for a window on the CPU (it is blended).

        ``window``: run the fast path's network copies (``x`` is a window, not the ROI).
        ``exact``: the float32 networks without autocast, whatever ``amp`` says (:meth:`confirm`).
        """
        return self._guarded(lambda inputs: self._members_mean(stage, inputs, window), x, exact)

    def _guarded(self, run, x, exact: bool = False):
        """``run(x)`` on the device in inference mode (and autocast with ``amp`` unless
        ``exact``); on GPU out-of-memory, move the session to the CPU with a warning and run it
        there."""
        torch = self._torch
        try:
            with torch.inference_mode(), self._autocast(exact):
                return run(x.to(self.device))
        except torch.cuda.OutOfMemoryError:
            warnings.warn("GPU out of memory; falling back to the CPU for this session", stacklevel=3)
            torch.cuda.empty_cache()
            self.device = torch.device("cpu")
            self.amp = self.amp and cpu_bfloat16_supported()  # float16 was for CUDA
            self._networks = {s: [self._placed(n) for n in nets] for s, nets in self._networks.items()}
            if self._window_nets is not None:
                self._window_nets = [n.cpu() for n in self._window_nets]
            self._image = self._image.cpu()
            with torch.inference_mode(), self._autocast(exact):
                return run(x.cpu())

    def _autocast(self, exact: bool = False):
        if not self.amp or exact:
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return self._torch.autocast("cuda", dtype=self._torch.float16)
        return self._torch.autocast("cpu", dtype=self._torch.bfloat16)

    def _channels_last(self) -> bool:
        """Whole-ROI passes use :func:`fast_refine.cpu_network` copies and channels-last inputs:
        on the CPU for ROIs above :data:`FAST_AUTO_MIN_VOXELS`, in both precisions, so that a
        float32 pass of an ``amp`` session (:meth:`confirm`) is what a float32 session computes.
        Smaller ROIs keep the package's networks, whose float32 results the shipped model's card
        records (a float32 pass there already takes a fraction of a second)."""
        return self.device.type == "cpu" and self._large_roi

    def _placed(self, net):
        """``net`` on the session's device, as a :func:`fast_refine.cpu_network` copy where
        :meth:`_channels_last` (float32 and bfloat16 both about twice as fast there)."""
        if self._channels_last():
            return fast_refine.cpu_network(net.cpu())
        return net.to(self.device)

    def _members_mean(self, stage: str, x, window: bool):
        from monai.inferers import sliding_window_inference

        roi = self.package.roi_size_vox
        if x.device.type == "cpu" and (window or self._channels_last()):  # channels-last networks
            x = x.contiguous(memory_format=self._torch.channels_last_3d)
        total = None
        for net in self._window_nets if window else self._networks[stage]:
            if window or tuple(x.shape[2:]) == tuple(roi):
                logits = net(x)
            else:
                logits = sliding_window_inference(
                    x, roi, sw_batch_size=1, predictor=net, overlap=0.25, mode="gaussian"
                )
            prob = torch_sigmoid(logits.float())
            total = prob if total is None else total + prob
        mean = (total / len(self._networks[stage]))[0, 0]
        # On CUDA copy back float16 either way: half the device-to-host bytes.
        return to_float16(mean) if mean.is_cuda or not window else mean.float().cpu().numpy()

    def _refine_input(self, probability: np.ndarray, indices, positives, box, reuse: bool = False):
        """The refine network's input ``[1, C + 3, ...]`` on ``box`` of the working grid.

        Channels: image, previous probability, positive and negative guidance. The guidance is
        built on the CPU only where some click's Gaussian reaches (exactly the full encoding
        there, zero elsewhere; :func:`fast_refine.guidance_in_box`), so neither mode moves or
        scales whole-ROI guidance arrays per click.

        ``reuse`` (whole ROI only): fill the session's one whole-ROI input tensor, whose image
        channels were copied once, in the networks' memory layout, instead of a new one; valid
        until the next such call.
        """
        torch = self._torch
        inner = (slice(None), slice(None)) + tuple(box)
        image = self._image[inner]
        shape = tuple(s.stop - s.start for s in box)
        if reuse and shape == tuple(self.grid.shape):
            if self._whole_input is None or self._whole_input.device != self.device:
                layout = torch.channels_last_3d if self._channels_last() else torch.contiguous_format
                self._whole_input = torch.zeros(
                    (1, image.shape[1] + 3) + shape, dtype=image.dtype, device=self.device
                ).contiguous(memory_format=layout)
                self._whole_input[:, : image.shape[1]] = image
            x = self._whole_input
            x[:, image.shape[1] + 1:] = 0
        else:
            x = torch.zeros((1, image.shape[1] + 3) + shape, dtype=image.dtype, device=self.device)
            x[:, : image.shape[1]] = image
        previous = probability[box]
        x[0, image.shape[1]].copy_(torch.from_numpy(previous))  # converts and moves in one pass
        reach = fast_refine.intersect(box, fast_refine.support_box(indices, self.grid.shape, self._kernel))
        if reach is not None:
            guidance = fast_refine.guidance_in_box(self.grid.shape, indices, positives, self._kernel, reach)
            local = (slice(None),) + tuple(
                slice(r.start - b.start, r.stop - b.start) for r, b in zip(reach, box)
            )
            x[0, image.shape[1] + 1:][local] = torch.from_numpy(guidance).to(self.device)
        return x

    def _to_ct(self, probability: np.ndarray, previous: _State | None = None, box=None) -> np.ndarray:
        """Binary mask on the CT box of the stored (float16) working-grid ``probability``.

        Equals re-sampling everything, but re-samples only the CT voxels that can differ from
        ``previous``'s mask. Linear interpolation is a convex combination of a CT voxel's 8
        working-grid neighbours, so the voxel is 0 before and after unless one of them is
        foreground in either probability, and unchanged unless one of them lies in ``box`` (the
        only region where the probability changed; None = anywhere). Such voxels lie within one
        working voxel of both the foregrounds' bounding box and ``box``.
        """
        threshold = self.package.threshold
        shape = self.grid.shape
        whole = tuple(slice(0, n) for n in shape)
        region = whole if box is None else fast_refine.expand_box(box, shape, 1)
        foreground = probability[region] > threshold
        if previous is not None:
            foreground |= previous.probability[region] > threshold
        out = np.zeros(self._ct_box_grid.shape, np.uint8) if previous is None else previous.ct_mask.copy()
        found = geometry.mask_box(foreground)
        if found is None:  # no foreground before or after: nothing can change
            return out
        found = tuple(slice(r.start + f.start, r.start + f.stop) for r, f in zip(region, found))
        remap = fast_refine.intersect(fast_refine.expand_box(found, shape, 1), region)
        ct_sub = geometry.bounding_box_in(self._ct_box_grid, geometry.sub_grid(self.grid, remap))
        if any(s.stop <= s.start for s in ct_sub):
            return out
        ct_sub_grid = geometry.sub_grid(self._ct_box_grid, ct_sub)
        # The neighbours those CT voxels read lie inside their bounding box grown by 1 (keep 2).
        source = fast_refine.expand_box(geometry.bounding_box_in(self.grid, ct_sub_grid), shape, 2)
        crop = probability[source].astype(np.float32)
        prob_ct = geometry.resample(crop, geometry.sub_grid(self.grid, source), ct_sub_grid, order=1)
        out[ct_sub] = prob_ct > threshold
        return out

    # ------------------------------------------------------------ fast path
    def _whole(self) -> tuple:
        return tuple(slice(0, n) for n in self.grid.shape)

    def _first_norms(self) -> list:
        """Per refine member, ``(name, conv)`` of its first instance norm (:func:`fast_refine.first_norm`)."""
        if self._first_norm_cache is None:
            self._first_norm_cache = [fast_refine.first_norm(net) for net in self._networks["refine"]]
        return self._first_norm_cache

    def _state_moments(self, state: _State) -> list:
        """``state.moments``, computed from the whole ROI when the state has none yet (the initial
        state, or one a full-ROI click made)."""
        if state.moments is None:
            x = self._refine_input(
                state.probability, state.click_indices, [c.positive for c in state.clicks], self._whole()
            )
            with self._torch.inference_mode():
                x = x.to(self.device)
                state.moments = [fast_refine.conv_moments(conv, x) for _, conv in self._first_norms()]
        return state.moments

    def _moments_after(self, moments, prob_a, indices_a, positives_a, prob_b, indices_b, positives_b, box):
        """``moments`` of the input built from ``prob_a`` and clicks ``a``, updated to the input
        built from ``prob_b`` and clicks ``b``; the two inputs differ only inside ``box``.

        Exact: the first norm's input is a convolution of the network input, so only the outputs
        within the kernel's reach of ``box`` change, and those read inputs within the same reach.
        """
        if box is None:
            return moments
        shape = self.grid.shape
        reach = max(
            (k - 1) // 2 * d for _, conv in self._first_norms()
            for k, d in zip(conv.kernel_size, conv.dilation)
        )
        out_box = fast_refine.expand_box(box, shape, reach)
        source = fast_refine.expand_box(out_box, shape, reach)
        local = tuple(slice(o.start - s.start, o.stop - s.start) for o, s in zip(out_box, source))
        with self._torch.inference_mode():
            before = self._refine_input(prob_a, indices_a, positives_a, source).to(self.device)
            after = self._refine_input(prob_b, indices_b, positives_b, source).to(self.device)
            updated = []
            for (_, conv), (s1, s2) in zip(self._first_norms(), moments):
                a1, a2 = fast_refine.conv_moments(conv, before, local)
                b1, b2 = fast_refine.conv_moments(conv, after, local)
                updated.append((s1 - a1 + b1, s2 - a2 + b2))
        return updated

    def _set_tracked_stats(self, moments) -> None:
        """Give the ``"tracked"`` window networks' first norm the exact statistics of ``moments``
        (the deeper norms keep the calibration pass's, folded into their convolutions)."""
        count = int(np.prod(self.grid.shape))
        for window_net, net, (name, _), m in zip(
            self._window_nets, self._networks["refine"], self._first_norms(), moments
        ):
            fast_refine.set_norm_stats(window_net, net, name, *fast_refine.moments_to_stats(m, count))

    def _fast_box(self, index, edge: int | None = None):
        """The fast path's window for a click at working-grid ``index``, or None for a full pass.

        None when the window would be the whole ROI (nothing to save) or the ROI is larger than
        the model's (sliding-window inference has per-patch statistics; refined in full).
        """
        if tuple(self.grid.shape) != tuple(self.package.roi_size_vox):
            return None
        edge = self.fast_window if edge is None else int(edge)
        edge = max(self._divisor, edge // self._divisor * self._divisor)
        box = fast_refine.window_box(index, self.grid.shape, edge, align=self._divisor)
        return None if fast_refine.covers(box, self.grid.shape) else box

    def _prepare_window_nets(self) -> float:
        """Build the fast path's network copies once per initial state; returns seconds spent.

        ``"frozen"`` and ``"tracked"``: one full-ROI pass of each refine member at the initial
        state (previous probability = the initial model's, no clicks) records its instance-norm
        statistics, folded into one copy used for every click; ``"tracked"`` keeps the first norm
        out of the folding and sets its statistics exact for each click's input
        (:meth:`_set_tracked_stats`). The calibration state is always the initial one and the
        tracked statistics are a function of the states, so a fast click's result depends on the
        clicks only (same clicks, same mask).
        """
        if self._window_nets is not None:
            return 0.0
        t0 = time.perf_counter()
        if self.fast_norm == "window":
            self._window_nets = [fast_refine.onednn_network(net) for net in self._networks["refine"]]
            return time.perf_counter() - t0
        x = self._refine_input(self._history[0].probability, (), [], self._whole(), reuse=True)

        def record(inputs):
            recorded, total = [], None
            for net in self._networks["refine"]:
                stats = {}
                with fast_refine.record_norm_stats(net, stats):
                    prob = torch_sigmoid(net(inputs).float())
                total = prob if total is None else total + prob
                recorded.append(stats)
            mean = (total / len(recorded))[0, 0]
            return recorded, to_float16(mean)

        recorded, self._far_field = self._guarded(record, x)
        # "tracked": the first norm stays a separate module whose statistics each click sets.
        unfolded = [(name,) if self.fast_norm == "tracked" else () for name, _ in self._first_norms()]
        self._window_nets = [
            fast_refine.frozen_network(
                net, {k: (m.clone(), v.clone()) for k, (m, v) in stats.items()},
                cpu_layout=self.device.type == "cpu", unfolded=keep,
            )
            for net, stats, keep in zip(self._networks["refine"], recorded, unfolded)
        ]
        if self.fast_norm == "tracked":
            self._state_moments(self._history[0])
        return time.perf_counter() - t0

    # ------------------------------------------------------------ interaction
    def _initial_state(self, exact: bool) -> _State:
        """The initial model's state; ``exact``: in float32 whatever ``amp`` says."""
        t0 = time.perf_counter()
        probability = self._predict("initial", self._image, exact=exact)
        t1 = time.perf_counter()
        ct_mask = self._to_ct(probability)
        t2 = time.perf_counter()
        timings = {"model_s": t1 - t0, "backmap_s": t2 - t1, "total_s": t2 - t0}
        return _State((), (), probability, ct_mask, timings, exact=exact or not self.amp)

    def initial(self) -> StepResult:
        """Run the initial model (t = 0); clears any clicks."""
        self._require_image()
        self.cancel_confirm()
        t0 = time.perf_counter()
        self._history = [self._initial_state(exact=False)]
        timings = self._history[0].timings
        self._window_nets = None
        self._far_field = None
        if self._refine_mode == "auto" and self.device.type == "cpu" and self._large_roi:
            # The initial pass ran a network of the refine network's size on the same ROI.
            members = len(self._networks["refine"]) / len(self._networks["initial"])
            seconds = timings["model_s"]
            if AUTO_FULL_SECONDS < seconds * members <= 2 * AUTO_FULL_SECONDS:
                # Close: the process's first pass also builds the kernels (oneDNN); time another.
                t3 = time.perf_counter()
                self._predict("initial", self._image)
                timings["auto_retime_s"] = time.perf_counter() - t3
                seconds = min(seconds, timings["auto_retime_s"])
                timings["total_s"] = time.perf_counter() - t0
            estimate = seconds * members
            self._auto_full = estimate <= AUTO_FULL_SECONDS
            logger.info(
                "a whole-ROI refinement takes about %.2f s here (%s): refining %s", estimate,
                self.precision,
                "the whole ROI" if self._auto_full else f"in a {self.fast_window}^3 window around each click",
            )
        if self.device.type == "cuda" and self.refine_mode == "full":
            # One refine pass now (cuDNN tuning, kernel loading) so that the first click is as fast
            # as the others; its output is discarded.
            t3 = time.perf_counter()
            self._predict("refine", self._refine_input(self._history[0].probability, (), [], self._whole()))
            timings["warmup_s"] = time.perf_counter() - t3
            timings["total_s"] = time.perf_counter() - t0
        if self.refine_mode == "fast" and self._fast_box(tuple(s // 2 for s in self.grid.shape)):
            # A one-time cost here, so that every click is fast.
            timings["calibrate_s"] = self._prepare_window_nets()
            timings["total_s"] = time.perf_counter() - t0
        return self._result()

    def add_click(self, ras, positive: bool, mode: str | None = None) -> StepResult:
        """Add a click at ``ras`` (RAS mm) and refine; raises :class:`ClickError` outside the ROI.

        ``mode`` (``"fast"`` or ``"full"``) overrides the session's :attr:`refine_mode` for this
        click. A fast click whose window would be the whole ROI is refined in full, and so is one
        whose change keeps reaching the faces of ever larger windows (``fast_grow``).
        """
        if mode not in (None, "fast", "full"):
            raise ValueError(f"mode must be None, 'fast' or 'full', got {mode!r}")
        self.cancel_confirm()
        state = self._require_state()
        t0 = time.perf_counter()
        index = self.click_index(ras)
        click = Click(tuple(float(v) for v in ras), bool(positive))
        self._history.append(self._advance(state, click, index, mode or self.refine_mode, False, t0))
        return self._result()

    def _advance(self, state: _State, click: Click, index, mode: str, exact: bool, t0: float) -> _State:
        """The state after ``click`` (at working-grid ``index``) from ``state``, refined in
        ``mode``; ``exact``: the whole ROI in float32 whatever ``mode`` and ``amp`` say."""
        indices = state.click_indices + (index,)
        clicks = state.clicks + (click,)
        positives = [c.positive for c in clicks]
        rejections = state.rejections
        if self.region_removal and not click.positive:
            region = click_regions.rejected_region(state.probability > self.package.threshold, index)
            if region is not None:
                rejections = rejections + (region,)
        box = self._fast_box(index) if mode == "fast" and not exact else None
        refined = None
        if box is not None:
            refined = self._refine_window(state, indices, positives, box, rejections, t0)
        if refined is None:  # a full pass, or a window that grew to the whole ROI
            box = None
            probability, ct_mask, timings, removed = self._refine_full(
                state, indices, positives, rejections, t0, exact
            )
            moments = None  # computed from the whole ROI if a fast click follows
        else:
            probability, ct_mask, timings, removed, moments, box = refined
        window = None if box is None else tuple((s.start, s.stop) for s in box)
        removed_ml = removed * float(np.prod(self.grid.spacing)) / 1000.0
        return _State(
            clicks, indices, probability, ct_mask, timings, "full" if box is None else "fast", window,
            rejections, removed_ml, moments,
            exact=state.exact and box is None and (exact or not self.amp),
        )

    def _remove_rejected(self, probability: np.ndarray, rejections, indices, positives, previous: _State):
        """Zero the rejected regions that the clicks now allow removing (:mod:`.click_regions`),
        in place. Returns the bounding box of the voxels it changed (or None) and how many foreground
        voxels of ``previous``'s mask it removed (what disappears from the screen; a region the
        network predicts again after its removal is zeroed again without being counted).
        """
        if not rejections:
            return None, 0
        foreground = probability > self.package.threshold
        suppress = click_regions.suppressed(
            rejections, foreground, [i for i, p in zip(indices, positives) if p]
        )
        if suppress is None:
            return None, 0
        changed = suppress & (probability != 0)
        probability[suppress] = 0
        seen = suppress & foreground & (previous.probability > self.package.threshold)
        return geometry.mask_box(changed), int(seen.sum())

    def _refine_full(self, state: _State, indices, positives, rejections, t0: float, exact: bool = False):
        x = self._refine_input(state.probability, indices, positives, self._whole(), reuse=True)
        t1 = time.perf_counter()
        probability = self._predict("refine", x, exact=exact)
        t2 = time.perf_counter()
        _, removed = self._remove_rejected(probability, rejections, indices, positives, state)
        ct_mask = self._to_ct(probability, state)
        t3 = time.perf_counter()
        return probability, ct_mask, {
            "map_s": t1 - t0, "model_s": t2 - t1, "backmap_s": t3 - t2, "total_s": t3 - t0,
        }, removed

    def _refine_window(self, state: _State, indices, positives, box, rejections, t0: float):
        calibrate_s = self._prepare_window_nets()  # done by initial() unless the session is "full"
        t_norm = time.perf_counter()
        if self.fast_norm == "tracked":
            # The first norm's statistics of this click's full-ROI input: the state's, plus the
            # change the new click's guidance makes where its Gaussian reaches.
            click_moments = self._moments_after(
                self._state_moments(state), state.probability, state.click_indices,
                [c.positive for c in state.clicks], state.probability, indices, positives,
                fast_refine.support_box(indices[-1:], self.grid.shape, self._kernel),
            )
            self._set_tracked_stats(click_moments)
        norm_s = time.perf_counter() - t_norm
        # The first click after the initial state: outside the window, the refine network's own
        # no-click prediction (the calibration pass's output) replaces the initial model's.
        far = self._far_field if state is self._history[0] else None
        base = state.probability if far is None else far
        threshold = self.package.threshold
        t1 = time.perf_counter()
        edge, input_s = self.fast_window, 0.0
        while True:
            t_input = time.perf_counter()
            x = self._refine_input(state.probability, indices, positives, box)
            input_s += time.perf_counter() - t_input
            window_probability = self._predict("refine", x, window=True)
            if not self.fast_grow or not fast_refine.leaks(
                box, self.grid.shape, self.fast_margin, base[box] > threshold, window_probability > threshold
            ):
                break
            # The click's change reaches the window's faces: retry with a larger window, and
            # with the whole ROI (None) once a window would cover it.
            edge = int(round(edge * fast_refine.GROWTH))
            box = self._fast_box(indices[-1], edge)
            if box is None:
                return None
        t2 = time.perf_counter()
        weights = fast_refine.blend_weights(box, self.grid.shape, self.fast_margin)
        probability = base.copy()
        probability[box] = to_float16(
            weights * window_probability + (1.0 - weights) * base[box].astype(np.float32))
        removed_box, removed = self._remove_rejected(probability, rejections, indices, positives, state)
        changed = box if far is None else self._whole()
        if removed_box is not None:  # a removed region may reach outside the window: it changed too
            changed = tuple(
                slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(changed, removed_box)
            )
        ct_mask = self._to_ct(probability, state, changed)
        t3 = time.perf_counter()
        moments = None
        if self.fast_norm == "tracked" and far is None:  # the probability changed in `changed` only
            moments = self._moments_after(
                click_moments, state.probability, indices, positives, probability, indices, positives,
                changed,
            )
        t4 = time.perf_counter()
        timings = {
            "map_s": t1 - t0 - calibrate_s - norm_s + input_s, "model_s": t2 - t1 - input_s,
            "backmap_s": t3 - t2,
            "norm_s": norm_s + t4 - t3, "total_s": t4 - t0,
        }
        if calibrate_s:
            timings["calibrate_s"] = calibrate_s
        return probability, ct_mask, timings, removed, moments, box

    def undo(self) -> StepResult:
        """Remove the last click and restore the previous mask exactly."""
        self._require_state()
        self.cancel_confirm()
        if len(self._history) < 2:
            raise ClickError("there is no click to undo")
        self._history.pop()
        return self._result()

    def reset(self) -> StepResult:
        """Drop every click and return to the initial model's mask."""
        self._require_state()
        self.cancel_confirm()
        del self._history[1:]
        return self._result()

    # ------------------------------------------------------- exact follow-up
    @property
    def needs_confirm(self) -> bool:
        """True when the current mask is a preview (reduced precision, or a window) that
        :meth:`confirm` would replace with the exact float32 whole-ROI result."""
        return bool(self._history) and not self._history[-1].exact

    def confirm(self, cancel: threading.Event | None = None) -> StepResult | None:
        """Replace every preview state with the exact one: the initial model and each click
        since the last exact state, recomputed over the whole ROI in float32, in order (a click
        refined from a preview is itself a preview). Afterwards the history equals, bit for bit,
        what a float32 session with ``refine_mode="full"`` gives for the same clicks; undo and
        the clicks are unchanged.

        ``cancel``: a :class:`threading.Event`; once set, the work stops between two network
        layers and the session is left as it was. Returns the current step's result, or None
        when cancelled. Nothing to do (already exact): returns at once.
        """
        self._require_state()
        history = list(self._history)
        first = next((i for i, state in enumerate(history) if not state.exact), None)
        if first is None:
            return self._result()
        t0 = time.perf_counter()
        try:
            with self._cancellable(cancel):
                states = history[:first]
                if first == 0:
                    states.append(self._initial_state(exact=True))
                for old in history[max(first, 1):]:
                    states.append(self._advance(
                        states[-1], old.clicks[-1], old.click_indices[-1], "full", True, time.perf_counter()
                    ))
                if self.fast_norm == "tracked" and self._window_nets is not None:
                    # The next windowed click needs the first norm's moments of this state over
                    # the whole ROI (a fast click carries them forward, a full pass does not):
                    # computed here, in the background, not in that click.
                    self._state_moments(states[-1])
        except _Cancelled:
            return None
        for state, old in zip(states[first:], history[first:]):
            state.timings = dict(old.timings, confirm_s=state.timings["total_s"])
        states[-1].timings["confirm_total_s"] = time.perf_counter() - t0
        if len(self._history) != len(history) or any(a is not b for a, b in zip(self._history, history)):
            return None  # the history changed meanwhile (only possible without cancel_confirm)
        self._history[:] = states
        return self._result()

    def confirm_in_background(self, done=None) -> threading.Thread | None:
        """Run :meth:`confirm` in a daemon thread and return it (None when the mask is already
        exact). ``done(result)`` is called in that thread with confirm's result (None when
        cancelled or failed). The next ``add_click``, ``undo``, ``reset``, ``initial`` or
        ``set_image`` cancels it first (within one network layer), so clicks never wait for it
        long. Torch releases the GIL while it computes: a GUI thread stays responsive.
        """
        self.cancel_confirm()
        if not self.needs_confirm:
            return None
        cancel = threading.Event()

        def work():
            result = None
            try:
                result = self.confirm(cancel)
            except Exception:  # noqa: BLE001 - a worker must not die silently
                logger.exception("the exact follow-up pass failed; the preview mask stays")
            if done is not None:
                done(result)

        thread = threading.Thread(target=work, name="InteractiveRefine-confirm", daemon=True)
        self._confirm_job = (thread, cancel)
        thread.start()
        return thread

    @property
    def confirm_running(self) -> bool:
        """True while :meth:`confirm_in_background`'s thread runs."""
        job = self._confirm_job
        return job is not None and job[0].is_alive()

    def cancel_confirm(self) -> None:
        """Cancel a background :meth:`confirm` and wait for its thread (it stops between two
        layers); the preview stays. Every call that changes the history does this first."""
        job, self._confirm_job = self._confirm_job, None
        if job is not None and job[0] is not threading.current_thread():
            job[1].set()
            job[0].join()

    @contextlib.contextmanager
    def _cancellable(self, cancel: threading.Event | None):
        """While inside, every layer of the float32 networks checks ``cancel`` before it runs."""
        if cancel is None:
            yield
            return

        def check(module, inputs):
            if cancel.is_set():
                raise _Cancelled()

        if cancel.is_set():
            raise _Cancelled()
        handles = [
            module.register_forward_pre_hook(check)
            for nets in self._networks.values()
            for net in nets
            for module in net.modules()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def click_index(self, ras) -> tuple[int, int, int]:
        """Working-grid voxel ``(k, j, i)`` of a RAS point; :class:`ClickError` if outside."""
        self._require_image()
        ras = np.asarray(ras, dtype=float)
        if ras.shape != (3,) or not np.all(np.isfinite(ras)):
            raise ClickError(f"a click needs three finite RAS coordinates, got {ras.tolist()}")
        if not self.ct.grid.contains_index(self.ct.grid.ras_to_index(ras)):
            raise ClickError(f"click at RAS {np.round(ras, 1).tolist()} mm is outside the CT image")
        ijk = self.grid.ras_to_index(ras)
        if not self.grid.contains_index(ijk):
            raise ClickError(
                f"click at RAS {np.round(ras, 1).tolist()} mm is outside the region of interest "
                f"(centre {np.round(self.grid.center_ras(), 1).tolist()}, "
                f"{'x'.join(str(s) for s in self.grid.shape[::-1])} voxels)"
            )
        i, j, k = np.clip(np.rint(ijk).astype(int), 0, np.array(self.grid.shape[::-1]) - 1)
        return int(k), int(j), int(i)

    # ---------------------------------------------------------------- results
    @property
    def clicks(self) -> tuple:
        return self._history[-1].clicks if self._history else ()

    @property
    def step(self) -> int:
        return len(self._history) - 1

    @property
    def probability(self) -> np.ndarray:
        """Current foreground probability on the working grid (float32 ``[k, j, i]``)."""
        return self._require_state().probability.astype(np.float32)

    @property
    def ct_box(self) -> tuple[slice, slice, slice]:
        """The ``[k, j, i]`` slices of the CT grid that the ROI covers (the only part written)."""
        self._require_image()
        return self._ct_box

    def mask_in_box(self) -> np.ndarray:
        """Current binary mask (uint8) on the CT grid restricted to :attr:`ct_box`."""
        return self._require_state().ct_mask

    def mask_on_ct(self) -> np.ndarray:
        """Current binary mask (uint8 ``[k, j, i]``) on the full CT grid, zero outside the ROI."""
        state = self._require_state()
        mask = np.zeros(self.ct.shape, dtype=np.uint8)
        mask[self._ct_box] = state.ct_mask
        return mask

    def mask_on_working_grid(self) -> np.ndarray:
        return (self.probability > self.package.threshold).astype(np.uint8)

    @property
    def timings(self) -> list:
        """Per-step timings (seconds) of the current history, step 0 first."""
        return [dict(s.timings) for s in self._history]

    def _result(self) -> StepResult:
        state = self._history[-1]
        voxels = int(state.ct_mask.sum(dtype=np.int64))
        voxel_ml = float(np.prod(self.ct.grid.spacing)) / 1000.0
        return StepResult(
            step=self.step, n_clicks=len(state.clicks), timings=dict(state.timings),
            voxels=voxels, volume_ml=voxels * voxel_ml, device=str(self.device),
            mode=state.mode, window=state.window, removed_ml=state.removed_ml, exact=state.exact,
        )

    def _require_image(self) -> None:
        if self._image is None:
            raise SessionStateError("no image set: call set_image() first")

    def _require_state(self) -> _State:
        self._require_image()
        if not self._history:
            raise SessionStateError("no segmentation yet: run the initial segmentation first")
        return self._history[-1]


class _Cancelled(Exception):
    """:meth:`RefinementSession.confirm` was cancelled."""


def to_float16(values) -> np.ndarray:
    """``values`` (a torch tensor or numpy array) as the float16 numpy array the history stores,
    converted by torch: numpy's float32 -> float16 conversion takes a slow path for subnormal
    values, which a probability map is full of (0.16 s for a 144^3 map against under 1 ms in
    torch, the same bits)."""
    import torch

    if isinstance(values, np.ndarray):
        values = torch.from_numpy(np.ascontiguousarray(values))
    return values.half().cpu().numpy()


def cpu_bfloat16_supported() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX, through oneDNN); without
    it bfloat16 autocast is emulated and slower than float32."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                    and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))
    except (AttributeError, RuntimeError):  # an older or differently built torch: stay in float32
        return False


def torch_sigmoid(x):
    import torch

    return torch.sigmoid(x.float())


def _size_divisor(network: dict) -> int:
    from .networks import size_divisor

    return size_divisor(network)


def _check_image(volume: Volume | None, name: str) -> None:
    """Raise :class:`ImageError` for a missing, empty, NaN-containing or constant image."""
    if volume is None:
        raise ImageError(f"no {name} image was given")
    array = volume.array
    if array.size == 0 or min(array.shape) == 0:
        raise ImageError(f"the {name} image is empty (shape {array.shape})")
    finite = np.isfinite(array)
    if not finite.all():
        raise ImageError(f"the {name} image contains {int((~finite).sum())} NaN or infinite voxels")
    if float(array.max()) == float(array.min()):
        raise ImageError(f"the {name} image is empty: every voxel equals {float(array.max())}")

