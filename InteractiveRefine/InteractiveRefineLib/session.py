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
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import geometry
from .clicks import Click, gaussian_kernel, scaled, stamp
from .errors import ClickError, ImageError, SessionStateError
from .geometry import Grid, Volume
from .intensity import normalize_channels
from .model_package import ModelPackage, load_model_package

logger = logging.getLogger(__name__)

#: CT value outside the scanned field (air) and PET value outside the PET field.
CT_OUTSIDE_HU = -1024.0
PET_OUTSIDE = 0.0


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


@dataclass
class _State:
    clicks: tuple
    click_indices: tuple  # (k, j, i) on the working grid, one per click
    probability: np.ndarray  # float16 [k, j, i] on the working grid
    ct_mask: np.ndarray  # uint8 on the CT box
    timings: dict = field(default_factory=dict)


class RefinementSession:
    """Owns one PET/CT image, the model, and the click history. Deterministic."""

    def __init__(self, package: ModelPackage | str | None = None, device: str = "auto"):
        import torch

        if not isinstance(package, ModelPackage):
            package = load_model_package(package)
        self.package = package
        self.device = resolve_device(device)
        self._networks = {
            stage: [net.to(self.device) for net in nets] for stage, nets in package.networks.items()
        }
        clicks_card = package.card["clicks"]
        self._kernel = gaussian_kernel(
            float(clicks_card.get("sigma_vox", 2.0)), float(clicks_card.get("truncate", 4.0))
        )
        self._torch = torch
        self._clear()

    # ------------------------------------------------------------------ image
    def _clear(self) -> None:
        self.ct: Volume | None = None
        self.grid: Grid | None = None
        self._image = None  # torch [1, C, k, j, i] on device
        self._ct_box = None
        self._ct_box_grid: Grid | None = None
        self._history: list[_State] = []

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
        ct_roi = geometry.resample(ct.array, ct.grid, grid, order=1, cval=CT_OUTSIDE_HU)
        pet_roi = None
        if self.package.needs_pet:
            fraction = geometry.coverage(pet.grid, grid)
            if fraction == 0.0:
                raise ImageError(
                    "the PET does not overlap the CT region of interest: check that both images "
                    "belong to the same study and frame of reference"
                )
            if fraction < 0.5:
                logger.warning("the PET covers only %.0f%% of the ROI", 100 * fraction)
            pet_roi = geometry.resample(pet.array, pet.grid, grid, order=1, cval=PET_OUTSIDE)
        channels = normalize_channels(ct_roi, pet_roi, self.package.intensity_preset)
        ct_box = geometry.bounding_box_in(ct.grid, grid)
        image = self._torch.from_numpy(channels[None]).to(self.device)
        # Commit only after every check passed: a failed call leaves the session unchanged.
        self._clear()
        self.ct, self.grid, self._image = ct, grid, image
        self._ct_box, self._ct_box_grid = ct_box, geometry.sub_grid(ct.grid, ct_box)
        self.preprocess_seconds = time.perf_counter() - t0

    # -------------------------------------------------------------- inference
    def _predict(self, stage: str, x):
        """Mean sigmoid probability of the stage's members, ``[k, j, i]`` float32 numpy."""
        torch = self._torch
        try:
            with torch.inference_mode():
                return self._predict_on(stage, x.to(self.device))
        except torch.cuda.OutOfMemoryError:
            warnings.warn("GPU out of memory; falling back to the CPU for this session", stacklevel=2)
            torch.cuda.empty_cache()
            self.device = torch.device("cpu")
            self._networks = {s: [n.cpu() for n in nets] for s, nets in self._networks.items()}
            self._image = self._image.cpu()
            with torch.inference_mode():
                return self._predict_on(stage, x.cpu())

    def _predict_on(self, stage: str, x):
        from monai.inferers import sliding_window_inference

        roi = self.package.roi_size_vox
        total = None
        for net in self._networks[stage]:
            if tuple(x.shape[2:]) == tuple(roi):
                logits = net(x)
            else:
                logits = sliding_window_inference(
                    x, roi, sw_batch_size=1, predictor=net, overlap=0.25, mode="gaussian"
                )
            prob = torch_sigmoid(logits)
            total = prob if total is None else total + prob
        return (total / len(self._networks[stage]))[0, 0].float().cpu().numpy()

    def _guidance(self, indices, positives):
        raw = np.zeros((2,) + self.grid.shape, dtype=np.float32)
        for index, positive in zip(indices, positives):
            stamp(raw[0 if positive else 1], index, self._kernel)
        return np.stack([scaled(raw[0]), scaled(raw[1])])

    def _to_ct(self, probability: np.ndarray) -> np.ndarray:
        prob_ct = geometry.resample(probability, self.grid, self._ct_box_grid, order=1, cval=0.0)
        return (prob_ct > self.package.threshold).astype(np.uint8)

    # ------------------------------------------------------------ interaction
    def initial(self) -> StepResult:
        """Run the initial model (t = 0); clears any clicks."""
        self._require_image()
        t0 = time.perf_counter()
        probability = self._predict("initial", self._image)
        t1 = time.perf_counter()
        ct_mask = self._to_ct(probability)
        t2 = time.perf_counter()
        timings = {"model_s": t1 - t0, "backmap_s": t2 - t1, "total_s": t2 - t0}
        self._history = [_State((), (), probability.astype(np.float16), ct_mask, timings)]
        return self._result()

    def add_click(self, ras, positive: bool) -> StepResult:
        """Add a click at ``ras`` (RAS mm) and refine; raises :class:`ClickError` outside the ROI."""
        state = self._require_state()
        t0 = time.perf_counter()
        index = self.click_index(ras)
        click = Click(tuple(float(v) for v in ras), bool(positive))
        indices = state.click_indices + (index,)
        clicks = state.clicks + (click,)
        guidance = self._guidance(indices, [c.positive for c in clicks])
        extra = np.concatenate([state.probability.astype(np.float32)[None], guidance])[None]
        x = self._torch.cat([self._image, self._torch.from_numpy(extra).to(self.device)], dim=1)
        t1 = time.perf_counter()
        probability = self._predict("refine", x)
        t2 = time.perf_counter()
        ct_mask = self._to_ct(probability)
        t3 = time.perf_counter()
        timings = {"map_s": t1 - t0, "model_s": t2 - t1, "backmap_s": t3 - t2, "total_s": t3 - t0}
        self._history.append(_State(clicks, indices, probability.astype(np.float16), ct_mask, timings))
        return self._result()

    def undo(self) -> StepResult:
        """Remove the last click and restore the previous mask exactly."""
        self._require_state()
        if len(self._history) < 2:
            raise ClickError("there is no click to undo")
        self._history.pop()
        return self._result()

    def reset(self) -> StepResult:
        """Drop every click and return to the initial model's mask."""
        self._require_state()
        del self._history[1:]
        return self._result()

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
        )

    def _require_image(self) -> None:
        if self._image is None:
            raise SessionStateError("no image set: call set_image() first")

    def _require_state(self) -> _State:
        self._require_image()
        if not self._history:
            raise SessionStateError("no segmentation yet: run the initial segmentation first")
        return self._history[-1]


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

