"""The image inputs: validation and preprocessing of a PET/CT pair onto the working grid, once
per image, and the ``ct`` / ``pet`` builders that copy the cached channels."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .. import geometry, input_checks
from ..auto_roi import AUTO, CT_CENTRE, AutoRoi, auto_roi_center
from ..card import PET_VALUE_INPUTS
from ..errors import ImageError
from ..geometry import Grid, Volume
from ..intensity import images_on_grid, normalize_channels
from . import register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageCache:
    """One image, preprocessed: the CT, the working ``grid``, the normalised channels
    ``tensor`` ``[1, C, k, j, i]`` (the card's image channels, on the device), the CT voxels the
    ROI covers (``ct_box``, slices of the CT grid) and their grid, how long it took, and the PET
    as given (SUV; None without one), for tools that read PET values, and the fraction of the
    ROI it covers."""

    ct: Volume
    grid: Grid
    tensor: object
    channel_names: tuple
    ct_box: tuple
    ct_box_grid: Grid
    seconds: float
    pet: Volume | None = None
    pet_coverage: float | None = None
    #: The PET in SUV on the working grid (float32 ``[k, j, i]``), kept when a card input reads
    #: SUV values (``card.PET_VALUE_INPUTS``); None otherwise.
    pet_suv: object = None
    #: Where the ROI was placed and why (:class:`..auto_roi.AutoRoi`: automatic, CT centre, given).
    roi_placement: object = None
    #: What builders derive from this image once and reuse on every click (e.g. each click's
    #: PET region), keyed by builder; shared by the copies :meth:`on` makes.
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    def on(self, device) -> ImageCache:
        """This cache with its tensor on ``device`` (itself when it is there already)."""
        if self.tensor.device == device:
            return self
        from dataclasses import replace

        return replace(self, tensor=self.tensor.to(device))


def check_image(volume: Volume | None, name: str) -> None:
    """Raise :class:`ImageError` for a missing, empty or constant image, NaN or implausible
    values, a CT not in HU, or a sheared grid (:mod:`..input_checks`)."""
    if volume is None:
        raise ImageError(f"no {name} image was given")
    array = volume.array
    if array.size == 0 or min(array.shape) == 0:
        raise ImageError(f"the {name} image is empty (shape {array.shape})")
    if np.isfinite(array.flat[0]) and float(array.max()) == float(array.min()):
        raise ImageError(f"the {name} image is empty: every voxel equals {float(array.max())}")
    input_checks.check_values(array, name)  # NaN, implausible magnitudes, a CT not in HU
    input_checks.check_orthogonal(volume.grid, name)


def _roi_center(ct: Volume, pet: Volume | None, roi_center_ras, box: Grid) -> AutoRoi:
    """Where the ROI goes: None or ``"auto"``: :func:`..auto_roi.auto_roi_center` (a box of
    ``box``'s extent); ``"ct"``: the CT's centre; else the three RAS numbers given."""
    word = roi_center_ras.strip().lower() if isinstance(roi_center_ras, str) else None
    if isinstance(roi_center_ras, str) and word not in (AUTO, CT_CENTRE):
        raise ImageError(f"ROI centre must be {AUTO!r}, {CT_CENTRE!r} or three finite RAS numbers, "
                         f"got {roi_center_ras!r}")
    if roi_center_ras is None or word == AUTO:
        extent = np.abs(box.ijk_to_ras[:3, :3]) @ np.asarray(box.shape[::-1], dtype=float)
        placement = auto_roi_center(ct, pet, extent)
        logger.info("ROI: %s at RAS %s: %s", placement.description,
                    np.round(placement.center_ras, 1).tolist(), placement.reason)
        return placement
    if word == CT_CENTRE:
        centre = tuple(float(v) for v in ct.grid.center_ras())
        return AutoRoi(centre, "ct_centre", "asked for the CT's centre")
    center = np.asarray(roi_center_ras, float)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ImageError(f"ROI centre must be three finite RAS numbers, got {roi_center_ras!r}")
    if not ct.grid.contains_index(ct.grid.ras_to_index(center)):
        raise ImageError(f"ROI centre RAS {np.round(center, 1).tolist()} lies outside the CT")
    return AutoRoi(tuple(float(v) for v in center), "explicit", "given by the user")


#: Least fraction of the ROI the PET must cover, unless the caller allows less (the CLI's
#: ``--allow-low-pet-coverage``): outside the PET the model sees no uptake at all.
MIN_PET_COVERAGE = 0.5


def _check_pet_coverage(pet: Volume, grid: Grid, allow_low: bool = False) -> float:
    fraction = geometry.coverage(pet.grid, grid)
    if fraction == 0.0:
        raise ImageError(
            "the PET does not overlap the CT region of interest: check that both images "
            "belong to the same study and frame of reference"
        )
    if fraction < MIN_PET_COVERAGE:
        if not allow_low:
            raise ImageError(
                f"the PET covers only {100 * fraction:.0f}% of the region of interest (expected at "
                f"least {100 * MIN_PET_COVERAGE:.0f}%): move the ROI onto the PET, or allow low "
                "PET coverage")
        logger.warning("the PET covers only %.0f%% of the ROI", 100 * fraction)
    return fraction


def prepare(card, ct: Volume, pet: Volume | None, roi_center_ras, roi_size_vox, device,
            allow_low_pet_coverage: bool = False) -> ImageCache:
    """Validate a PET/CT pair and cache its normalised channels on the working grid.

    ``card``: the model's :class:`~..card.ModelCard`. ``roi_center_ras``: three RAS numbers,
    ``"ct"`` (the CT's centre) or None / ``"auto"`` (:mod:`..auto_roi`; the choice and its reason
    in ``ImageCache.roi_placement``); ``roi_size_vox`` ``(k, j, i)`` defaults to the model's ROI
    (larger: sliding-window inference). PET is resampled onto the working grid in physical
    space; it must cover :data:`MIN_PET_COVERAGE` of the ROI unless ``allow_low_pet_coverage``.
    Without a PET, a PET/CT model whose card has ``preprocessing.pet_optional`` runs on the CT alone, its
    normalised PET channel zero-filled (``ImageCache.pet`` None). Raises :class:`ImageError`
    naming the problem.
    """
    import torch

    t0 = time.perf_counter()
    check_image(ct, "CT")
    if card.needs_pet and pet is None and not card.pet_optional:
        raise ImageError("this model needs a PET image; none was given (its card does not allow "
                         "CT-only input: preprocessing.pet_optional)")
    if card.needs_pet and pet is not None:
        check_image(pet, "PET")
        input_checks.check_distinct(ct, pet)
    size = tuple(int(v) for v in (roi_size_vox or card.roi_size_vox))
    card.check_roi_size(size)
    placement = _roi_center(ct, pet if card.needs_pet else None, roi_center_ras,
                            geometry.working_grid(ct.grid, ct.grid.center_ras(), size, card.spacing_mm))
    grid = geometry.working_grid(ct.grid, np.asarray(placement.center_ras), size, card.spacing_mm)
    reads_pet = card.needs_pet and pet is not None  # else CT alone (and the PET zero-filled)
    pet_coverage = _check_pet_coverage(pet, grid, allow_low_pet_coverage) if reads_pet else None
    ct_roi, pet_roi = images_on_grid(ct, pet if reads_pet else None, grid)
    channels = normalize_channels(ct_roi, pet_roi, card.intensity_preset)
    if card.needs_pet and not reads_pet:  # HN-UISeg: the normalised PET channel zero-filled
        channels = np.concatenate([channels, np.zeros_like(channels[:1])])
    ct_box = geometry.bounding_box_in(ct.grid, grid)
    tensor = torch.from_numpy(channels[None]).to(device)
    reads_suv = any(spec.name in PET_VALUE_INPUTS for stage in card.stages.values() for spec in stage.inputs)
    return ImageCache(ct, grid, tensor, tuple(card.image_channels), ct_box,
                      geometry.sub_grid(ct.grid, ct_box), time.perf_counter() - t0, pet,
                      pet_coverage, pet_roi if reads_suv else None, roi_placement=placement)


class _ImageChannel:
    static, local = True, False

    def fill(self, out, spec, ctx, box) -> None:
        index = ctx.image.channel_names.index(spec.name)
        out.copy_(ctx.image.tensor[(0, slice(index, index + 1)) + tuple(box)])


register("ct")(type("CtInput", (_ImageChannel,), {}))
register("pet")(type("PetInput", (_ImageChannel,), {}))
