"""Read one DICOM image series with pydicom: sorted instances, geometry, per-slice rescale, SUV.

:func:`read_series` gives the instances sorted along the slice normal and the
:class:`~.geometry.Volume` they make (RAS, ``[k, j, i]``), each slice rescaled with its own
RescaleSlope/Intercept. :func:`read_pet` is how the CLI and the batch read ``--pet``: a DICOM
folder becomes SUVbw (:mod:`.suv`), a file (NIfTI/NRRD/MHA) is read as it is (already SUV).
The DICOM SEG/RTSTRUCT export uses the sorted CT instances (:mod:`.dicom_export`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError
from .geometry import LPS_TO_RAS, Volume, read_volume

logger = logging.getLogger(__name__)


@dataclass
class Series:
    """The instances of one series, sorted along the slice normal, and their volume."""

    datasets: list
    volume: Volume


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # an engine extra: pip install pydicom
        raise ImageError("reading DICOM with SUV needs pydicom (pip install pydicom)") from exc
    return pydicom


def is_dicom_folder(path) -> bool:
    return Path(path).is_dir()


def load_datasets(folder, modality: str | None = None) -> list:
    """The image instances of the one series in ``folder`` (refuses several series)."""
    pydicom = _pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"DICOM folder not found: {folder}")
    groups: dict = {}
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(str(path), force=False)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        if "PixelData" not in ds or "ImagePositionPatient" not in ds:
            continue
        if modality and str(getattr(ds, "Modality", "")).upper() != modality:
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    if not groups:
        what = f"{modality} " if modality else ""
        raise ImageError(f"no {what}DICOM image series in folder {folder}")
    if len(groups) > 1:
        raise ImageError(f"{folder} holds {len(groups)} DICOM series: give a folder with one series")
    return next(iter(groups.values()))


def _normal(ds) -> np.ndarray:
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def sort_datasets(datasets) -> list:
    """Instances sorted by position along the slice normal (refuses mixed orientations)."""
    normal = _normal(datasets[0])
    for ds in datasets:
        if not np.allclose(_normal(ds), normal, atol=1e-4):
            raise ImageError("the DICOM series mixes slice orientations (ImageOrientationPatient)")
    return sorted(datasets, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))


def series_matrix(datasets) -> np.ndarray:
    """IJK-to-RAS matrix of sorted instances (LPS DICOM positions converted once, here)."""
    first = datasets[0]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.asarray(first.ImagePositionPatient, dtype=float)
    if len(datasets) > 1:
        step = (np.asarray(datasets[-1].ImagePositionPatient, float) - origin) / (len(datasets) - 1)
    else:
        step = _normal(first) * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    if np.linalg.norm(step) < 1e-6:
        raise ImageError("the DICOM series has several instances at one position")
    _check_spacing(datasets, origin, step)
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * column_spacing
    lps[:3, 1] = orientation[3:] * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def _check_spacing(datasets, origin: np.ndarray, step: np.ndarray) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing slice would shift the rest):
    the same rule as for files read by :func:`~.geometry.read_volume`."""
    from .input_checks import check_series_files

    normal = step / np.linalg.norm(step)
    positions = [float(np.asarray(ds.ImagePositionPatient, dtype=float) @ normal) for ds in datasets]
    check_series_files("the DICOM series", [getattr(datasets[0], "SeriesInstanceUID", "")], positions)


def rescaled(ds) -> np.ndarray:
    """One instance's pixels with its own RescaleSlope/Intercept (float64, ``[j, i]``)."""
    try:
        pixels = ds.pixel_array.astype(np.float64)
    except Exception as exc:  # pydicom raises several types for an undecodable transfer syntax
        raise ImageError(f"cannot decode the pixels of {getattr(ds, 'SOPInstanceUID', '?')}: {exc}") from exc
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return pixels * slope + intercept


def read_series(folder, modality: str | None = None) -> Series:
    """The one series of ``folder``: sorted instances and their per-slice rescaled volume."""
    datasets = sort_datasets(load_datasets(folder, modality))
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) > 1:
        raise ImageError(f"the DICOM series in {folder} mixes image sizes {sorted(shapes)}")
    return Series(datasets, read_series_from(datasets))


def read_pet_series(folder, allow_implausible: bool = False):
    """A PET DICOM folder as SUVbw: ``(Volume, SuvFactors)`` (:mod:`.suv`'s rules).

    Raises :class:`~.suv.SuvError` naming the tag when the SUV cannot be computed or is
    implausible (unless ``allow_implausible``).
    """
    from .suv import check_suv_range, suv_factors

    datasets = sort_datasets(load_datasets(folder))
    info = suv_factors(datasets, allow_implausible=allow_implausible)
    modality = {str(getattr(ds, "Modality", "")).upper() for ds in datasets}
    if modality != {"PT"}:
        raise ImageError(f"{folder} is not a PET series (Modality {sorted(modality)})")
    volume = read_series_from(datasets)
    suv = volume.array * info.factors[:, None, None].astype(np.float32)
    check_suv_range(suv, info, allow_implausible)
    logger.info("PET %s -> SUVbw: %s, factor %s", folder, info.method, info.factors[0])
    return Volume(suv, volume.grid), info


def read_series_from(datasets) -> Volume:
    """The volume of sorted instances, each slice rescaled with its own slope and intercept."""
    array = np.stack([rescaled(ds) for ds in datasets]).astype(np.float32)
    return Volume.from_array(array, series_matrix(datasets))


def read_pet(path, allow_implausible: bool = False) -> Volume:
    """``--pet``: a DICOM folder becomes SUVbw; a file is read as stored (already SUV)."""
    if is_dicom_folder(path):
        return read_pet_series(path, allow_implausible)[0]
    return read_volume(path)
