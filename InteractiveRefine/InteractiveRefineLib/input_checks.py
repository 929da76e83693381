"""Checks of input images at the engine's boundary: complete files, one DICOM series without
gaps, orthogonal axes, plausible values, a PET that is not the CT.

Each check raises :class:`ImageError` naming the file or image, the value found and what was
expected. The thresholds are stated here, once, and quoted in the README.
"""
from __future__ import annotations

import gzip
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import ImageError

logger = logging.getLogger(__name__)

#: Largest |value| accepted: a CT in Hounsfield units stays within about -1024..3071 (metal
#: artefacts on an extended scale reach ~30,000); a PET in SUV within ~100, in Bq/mL within
#: ~1e6. Larger values are a scaling error, and above ~1e19 the PET z-score overflows float32.
MAX_ABS_VALUE = {"CT": 1e5, "PET": 1e7}
#: Directions whose axes deviate from orthogonal by more than this (|cos| of the angle between
#: two axes, ~0.06 degrees) are a sheared grid, which the working grid cannot follow.
ORTHOGONALITY_TOLERANCE = 1e-3
#: Lowest value a CT in HU reaches somewhere (fat is about -100, air -1000). A CT above it (an
#: 8-bit picture in 0..255, say) is used with a warning; a CT of only 0 and 1 (a mask) is refused.
HU_AIR_OR_FAT = -100.0
#: Slice gaps larger than this multiple of the median gap mean a missing DICOM slice.
MAX_SLICE_GAP_RATIO = 1.5

_CHUNK = 1 << 20


def _chunks(path: Path):
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def _float_layout(head: bytes):
    """``(dtype, vox_offset)`` of a NIfTI-1 file with float voxels, else ``(None, 0)``."""
    for endian in "<>":
        if struct.unpack(endian + "i", head[:4])[0] == 348:
            code = struct.unpack(endian + "h", head[70:72])[0]
            kind = {16: "f4", 64: "f8"}.get(code)
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            return (np.dtype(endian + kind), offset) if kind else (None, 0)
    return None, 0


def _scan(path: Path, nifti: bool) -> tuple[bytes, int, int]:
    """One pass over the (decompressed) file: its first 544 bytes, its length, and (float
    NIfTI) how many voxels are NaN or infinite. SimpleITK reads NIfTI NaN as 0, so they are
    counted here, in the file."""
    head, total, nonfinite, layout, carry = b"", 0, 0, None, b""
    try:
        for chunk in _chunks(path):
            head += chunk[: max(544 - len(head), 0)]
            if nifti and layout is None and len(head) >= 348:
                layout = _float_layout(head)
            if layout and layout[0] is not None:
                data = carry + chunk[max(layout[1] - total, 0):]
                usable = len(data) // layout[0].itemsize * layout[0].itemsize
                values = np.frombuffer(data[:usable], layout[0])
                nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                carry = data[usable:]
            total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise ImageError(f"{path}: the gzip stream is damaged or truncated ({exc})") from exc
    return head, total, nonfinite


def _nifti_expected_bytes(head: bytes, path: Path) -> int | None:
    """Bytes a NIfTI-1 file must hold (header + voxel data), or None for other formats."""
    if len(head) < 348:
        raise ImageError(f"{path}: {len(head)} bytes is shorter than a NIfTI header (348 bytes)")
    for endian in "<>":
        if struct.unpack(endian + "i", head[:4])[0] == 348:
            break
    else:
        return None  # NIfTI-2 or not NIfTI: SimpleITK checks it
    dims = struct.unpack(endian + "8h", head[40:56])
    bitpix = struct.unpack(endian + "h", head[72:74])[0]
    offset = struct.unpack(endian + "f", head[108:112])[0]
    if not 1 <= dims[0] <= 7 or any(d < 1 for d in dims[1 : dims[0] + 1]) or bitpix < 1:
        raise ImageError(f"{path}: the NIfTI header has invalid dimensions {list(dims)} "
                         f"(bitpix {bitpix}); expected dim[0] in 1..7 and positive sizes")
    if struct.unpack(endian + "h", head[254:256])[0] > 0:  # sform_code: readers may fall back
        rows = np.array(struct.unpack(endian + "12f", head[280:328]), dtype=float).reshape(3, 4)
        _check_axes(rows[:, :3], f"{path}: the NIfTI sform")  # to the qform, silently rotated
    return int(offset) + int(np.prod(dims[1 : dims[0] + 1], dtype=np.int64)) * bitpix // 8


def check_file_complete(path) -> None:
    """ImageError when a NIfTI file (``.nii``, ``.nii.gz``) holds less than its header announces
    or NaN/infinite voxels, or a gzip file is truncated or fails its CRC. Other formats (and a
    missing file) are left to the reader."""
    path = Path(path)
    name = path.name.lower()
    if not path.is_file() or not (name.endswith(".gz") or name.endswith(".nii")):
        return
    nifti = name.endswith(".nii") or name.endswith(".nii.gz")
    head, total, nonfinite = _scan(path, nifti)
    if not nifti:
        return
    expected = _nifti_expected_bytes(head, path)
    if expected is not None and total < expected:
        raise ImageError(f"{path}: truncated: the NIfTI header announces {expected} bytes, the "
                         f"file holds {total}")
    if nonfinite:
        raise ImageError(f"{path}: {nonfinite} NaN or infinite voxels; expected finite values")


def check_series_files(path, series: list[str], positions: list) -> None:
    """ImageError for a DICOM folder with several series, or one whose slices have a gap.

    ``series``: the series UIDs found; ``positions``: the slices' positions (mm) along the
    slice normal, in reading order."""
    if len(series) > 1:
        raise ImageError(f"{path} holds {len(series)} DICOM series; expected one: give the "
                         "folder of the CT or PET series alone")
    gaps = np.abs(np.diff(np.sort(np.asarray(positions, dtype=float))))
    if gaps.size < 2:
        return
    median = float(np.median(gaps))
    worst = int(np.argmax(gaps))
    if median <= 0 or gaps[worst] > MAX_SLICE_GAP_RATIO * median or gaps.min() < median / MAX_SLICE_GAP_RATIO:
        raise ImageError(f"{path}: the DICOM slices are not evenly spaced (gap of "
                         f"{gaps[worst]:.2f} mm after slice {worst + 1}, median {median:.2f} mm): "
                         "a slice is missing or repeated")


def _check_axes(matrix: np.ndarray, what: str) -> None:
    """ImageError unless the columns of ``matrix`` (the voxel axes) are orthogonal."""
    norms = np.linalg.norm(matrix, axis=0)
    if np.any(norms == 0):
        raise ImageError(f"{what} has a zero-length axis: {matrix.tolist()}")
    direction = matrix / norms
    worst = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if worst > ORTHOGONALITY_TOLERANCE:
        angle = float(np.degrees(np.arccos(min(worst, 1.0))))
        raise ImageError(f"{what} axes are not orthogonal (two axes at {angle:.2f} degrees, "
                         "expected 90): a sheared grid; resample it to an orthogonal grid first")


def check_orthogonal(grid, name: str) -> None:
    """ImageError when the image's axes are not orthogonal (a sheared grid)."""
    _check_axes(grid.ijk_to_ras[:3, :3], f"the {name} image's")


def check_values(array: np.ndarray, name: str) -> None:
    """ImageError for NaN/infinite, implausibly large, or (CT) non-HU values."""
    finite = np.isfinite(array)
    if not finite.all():
        raise ImageError(f"the {name} image contains {int((~finite).sum())} NaN or infinite voxels")
    low, high = float(array.min()), float(array.max())
    limit = MAX_ABS_VALUE.get(name)
    if limit is not None and max(abs(low), abs(high)) > limit:
        raise ImageError(f"the {name} image has values up to {max(abs(low), abs(high)):.3g}; "
                         f"expected |value| <= {limit:.0e} (a scaling error?)")
    if name != "CT":
        return
    if low >= 0.0 and high <= 1.0 and np.all((array == 0) | (array == 1)):
        raise ImageError("the CT image holds only 0 and 1: a mask, not Hounsfield units; expected "
                         "a CT with air or fat below -100 HU")
    if low > HU_AIR_OR_FAT:
        logger.warning("the CT's values lie in %g..%g: no fat or air below %g HU; is it in "
                       "Hounsfield units?", low, high, HU_AIR_OR_FAT)


def check_distinct(ct, pet) -> None:
    """ImageError when the PET is the CT itself (same voxels on the same grid)."""
    if (ct.array.shape == pet.array.shape and np.allclose(ct.ijk_to_ras, pet.ijk_to_ras)
            and np.array_equal(ct.array, pet.array)):
        raise ImageError("the PET image is identical to the CT image (the same file given twice?)")
