"""Volumes with full geometry, file IO (RAS at the edges) and physical-space resampling.

A :class:`Volume` is a numpy array indexed ``[k, j, i]`` plus the 4x4 matrix that maps voxel
indices ``(i, j, k)`` to RAS millimetres. Files (NIfTI, NRRD, MHA, DICOM series) are read and
written with SimpleITK, which works in LPS; the conversion happens here and nowhere else.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import ImageError
from .input_checks import check_file_complete, check_series_files
from .output_files import write_atomically

logger = logging.getLogger(__name__)

#: LPS <-> RAS: negate the first two axes (the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` as ``(k, j, i)`` and the 4x4 ``ijk_to_ras`` matrix (mm)."""

    shape: tuple[int, int, int]
    ijk_to_ras: np.ndarray

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along ``(i, j, k)``."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the i, j, k axes."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    def ras_to_index(self, ras) -> np.ndarray:
        """Continuous voxel index ``(i, j, k)`` of RAS points (``(..., 3)`` array, mm)."""
        ras = np.asarray(ras, dtype=float)
        homog = np.concatenate([ras, np.ones(ras.shape[:-1] + (1,))], axis=-1)
        return (homog @ self.ras_to_ijk.T)[..., :3]

    def index_to_ras(self, ijk) -> np.ndarray:
        """RAS mm of voxel indices ``(i, j, k)`` (``(..., 3)`` array)."""
        ijk = np.asarray(ijk, dtype=float)
        homog = np.concatenate([ijk, np.ones(ijk.shape[:-1] + (1,))], axis=-1)
        return (homog @ self.ijk_to_ras.T)[..., :3]

    def contains_index(self, ijk, margin: float = 0.5) -> bool:
        """True when a continuous index ``(i, j, k)`` lies inside the grid (voxel edges included)."""
        ijk = np.asarray(ijk, dtype=float)
        upper = np.array(self.shape[::-1], dtype=float) - 1.0 + margin
        return bool(np.all(ijk >= -margin) and np.all(ijk <= upper))

    def corners_ras(self) -> np.ndarray:
        """The 8 outer corners of the grid (voxel edges, not centres) in RAS mm, ``(8, 3)``."""
        ni, nj, nk = self.shape[2], self.shape[1], self.shape[0]
        corners = np.array(
            [[i, j, k] for i in (-0.5, ni - 0.5) for j in (-0.5, nj - 0.5) for k in (-0.5, nk - 0.5)]
        )
        return self.index_to_ras(corners)

    def center_ras(self) -> np.ndarray:
        return self.index_to_ras((np.array(self.shape[::-1], dtype=float) - 1.0) / 2.0)


@dataclass(frozen=True)
class Volume:
    """An image: ``array`` indexed ``[k, j, i]`` on ``grid`` (RAS mm)."""

    array: np.ndarray
    grid: Grid

    @classmethod
    def from_array(cls, array: np.ndarray, ijk_to_ras: np.ndarray) -> Volume:
        array = np.asarray(array)
        if array.ndim != 3:
            raise ImageError(f"expected a 3D array [k, j, i], got shape {array.shape}")
        matrix = np.asarray(ijk_to_ras, dtype=float)
        if matrix.shape != (4, 4) or abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
            raise ImageError(f"expected an invertible 4x4 IJK-to-RAS matrix, got {matrix.tolist()}")
        return cls(array, Grid(tuple(int(n) for n in array.shape), matrix))

    @property
    def ijk_to_ras(self) -> np.ndarray:
        return self.grid.ijk_to_ras

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape


def ijk_to_ras_from_itk(origin, spacing, direction) -> np.ndarray:
    """Build the IJK-to-RAS matrix from ITK's LPS origin, spacing and row-major direction."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return LPS_TO_RAS @ matrix


def itk_geometry_from_ijk_to_ras(ijk_to_ras: np.ndarray):
    """Inverse of :func:`ijk_to_ras_from_itk`: ``(origin, spacing, direction)`` in LPS."""
    lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return tuple(lps[:3, 3]), tuple(spacing), tuple(direction.ravel())


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI/NRRD/MHA file or a DICOM series folder into a float32 :class:`Volume`.

    Raises :class:`ImageError` naming the path when it is missing or unreadable. SimpleITK does
    the reading (Slicer bundles it); where it is absent, NIfTI is read with nibabel.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    try:
        import SimpleITK as sitk
    except ImportError:
        return _read_nifti_nibabel(path)
    check_file_complete(path)
    try:
        image = _read_series(path, sitk) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageError(f"cannot read image {path}: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(
            f"{path}: expected a 3D scalar image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    matrix = ijk_to_ras_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return Volume.from_array(array, matrix)


def _read_series(path: Path, sitk):
    """The one DICOM series of a folder; ImageError for none, several, or a missing slice."""
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise ImageError(f"no DICOM series found in folder {path}")
    files = reader.GetGDCMSeriesFileNames(str(path), series[0])
    positions = []
    for name in files if len(series) == 1 else ():
        header = sitk.ImageFileReader()
        header.SetFileName(name)
        header.ReadImageInformation()
        if header.HasMetaDataKey("0020|0032"):
            position = [float(v) for v in header.GetMetaData("0020|0032").split("\\")]
            normal = np.asarray(header.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
            positions.append(float(np.dot(position, normal)))
    check_series_files(path, list(series), positions)
    reader.SetFileNames(files)
    return reader.Execute()


def _read_nifti_nibabel(path: Path) -> Volume:
    import nibabel

    try:
        image = nibabel.load(str(path))
        array = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many unrelated types for a broken file
        raise ImageError(f"cannot read image {path}: {exc}") from exc
    if array.ndim != 3:
        raise ImageError(f"{path}: expected a 3D scalar image, got shape {array.shape}")
    return Volume.from_array(np.ascontiguousarray(array.transpose(2, 1, 0)), image.affine)


def write_volume(volume: Volume, path: str | os.PathLike, dtype=None) -> None:
    """Write a :class:`Volume` to NIfTI/NRRD/MHA with its full geometry (converted to LPS).

    The file appears whole or not at all (:func:`.output_files.write_atomically`); OutputError
    names the path when it cannot be written."""
    array = volume.array if dtype is None else volume.array.astype(dtype)
    write_atomically(path, lambda tmp: _write_array(array, volume.ijk_to_ras, tmp), "image")


def _write_array(array: np.ndarray, ijk_to_ras: np.ndarray, path: str) -> None:
    try:
        import SimpleITK as sitk
    except ImportError:  # NIfTI only, through nibabel (RAS affine, [i, j, k] array order)
        import nibabel

        nibabel.save(nibabel.Nifti1Image(array.transpose(2, 1, 0), ijk_to_ras), str(path))
        return
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    origin, spacing, direction = itk_geometry_from_ijk_to_ras(ijk_to_ras)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)


def _kji_affine(target: Grid, source: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset mapping target ``[k, j, i]`` indices to source ``[k, j, i]`` indices."""
    ijk_map = source.ras_to_ijk @ target.ijk_to_ras
    flip = np.eye(4)[[2, 1, 0, 3]]  # (i, j, k) <-> (k, j, i)
    kji_map = flip @ ijk_map @ flip
    return kji_map[:3, :3], kji_map[:3, 3]


def _edge_padded(array: np.ndarray) -> np.ndarray:
    """One edge-replicated voxel on every side: the image covers its voxels' full extent
    (centre +/- half a voxel), so a 4.7 mm PET fills the CT field it was acquired over instead
    of fading to ``cval`` over its outer 2.3 mm."""
    return np.pad(np.asarray(array, dtype=np.float32), 1, mode="edge")


def resample(
    array: np.ndarray, source: Grid, target: Grid, order: int = 1, cval: float = 0.0
) -> np.ndarray:
    """Resample ``array`` (on ``source``) onto ``target`` in physical (RAS) space.

    ``order`` is the spline order (0 nearest, 1 linear). Target voxels outside the source's
    field of view take ``cval``. Returns a float32 array of ``target.shape``.
    """
    matrix, offset = _kji_affine(target, source)
    return ndimage.affine_transform(
        _edge_padded(array), matrix, offset + 1.0, output_shape=target.shape,
        order=order, mode="constant", cval=cval, prefilter=False,
    ).astype(np.float32, copy=False)


def resample_probability(array: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """``resample(array, source, target, order=1)`` for a probability (float16 values, the
    history's), faster where the grids' axes are parallel (the usual working-grid / CT pair): one
    axis at a time, with the same float64 weights and edge padding as scipy (the same float32
    result on float16 values in the tests; images keep :func:`resample`, whose float32 values
    could differ in the last bit). Other grids: :func:`resample`."""
    matrix, offset = _kji_affine(target, source)
    if np.any(matrix - np.diag(np.diag(matrix))):
        return resample(array, source, target, order=1)
    return _linear_axis_aligned(np.asarray(array, dtype=np.float32), np.diag(matrix), offset, target.shape)


def _linear_axis_aligned(array: np.ndarray, scale, offset, shape) -> np.ndarray:
    """Linear re-sampling along parallel axes, k then j then i (scipy's order of the sums): target
    voxel ``t`` of axis ``a`` reads source index ``scale[a] * t + offset[a]``; 0 beyond the
    edge-padded array."""
    values = array
    for axis in range(array.ndim):
        n = array.shape[axis]
        padded = np.arange(shape[axis], dtype=np.float64) * scale[axis] + offset[axis] + 1.0
        within = (padded >= 0.0) & (padded <= n + 1.0)  # inside the edge-padded array
        low = np.clip(np.floor(padded), 0.0, float(n))
        upper = padded - low
        low = low.astype(np.intp)
        moved = np.moveaxis(values, axis, 0)  # padded index q reads source index clip(q - 1, 0, n - 1)
        lower = moved[np.clip(low - 1, 0, n - 1)]
        if upper.any():
            w_low = ((1.0 - upper) * within)[:, None, None]
            w_up = (upper * within)[:, None, None]
            lower = lower * w_low + moved[np.clip(low, 0, n - 1)] * w_up
        elif not within.all():  # whole-voxel steps: weights 1 and 0, a copy
            lower = lower * within[:, None, None]
        values = np.moveaxis(lower, 0, axis)
    return values.astype(np.float32)


def _inside(source: Grid, target: Grid, points_ijk: np.ndarray) -> np.ndarray:
    index = source.ras_to_index(target.index_to_ras(points_ijk))
    upper = np.array(source.shape[::-1], dtype=float) - 0.5
    return np.all((index >= -0.5) & (index <= upper), axis=-1)


def coverage(source: Grid, target: Grid) -> float:
    """Fraction of ``target`` voxel centres inside ``source``'s field of view (0 = no overlap)."""
    return float(_inside(source, target, _grid_points(target.shape)).mean())


def inside_mask(source: Grid, target: Grid) -> np.ndarray:
    """Boolean ``[k, j, i]`` mask of the ``target`` voxels whose centre lies inside ``source``."""
    return _inside(source, target, _grid_points(target.shape, step=1)).reshape(target.shape)


def _grid_points(shape, step: int = 4) -> np.ndarray:
    """A regular sample of voxel indices ``(i, j, k)`` (every ``step``-th voxel) of a grid."""
    k, j, i = np.meshgrid(*[np.arange(0, n, step, dtype=float) for n in shape], indexing="ij")
    return np.stack([i.ravel(), j.ravel(), k.ravel()], axis=-1)


def working_grid(
    reference: Grid, center_ras, size_vox=(144, 144, 144), spacing_mm=(1.0, 1.0, 1.0)
) -> Grid:
    """The model's working grid: an ROI of ``size_vox`` (k, j, i) voxels at ``spacing_mm`` (i, j, k).

    The axes follow the reference (CT) directions so an oblique CT is not rotated, reordered and
    flipped to point as close as possible to L, P, S (:func:`canonical_axes`) so the result
    does not depend on the order in which the CT is stored; ``size_vox`` is given along the
    reference's axes and reordered with them. The ROI is centred at ``center_ras`` (RAS mm).
    """
    order, signs = canonical_axes(reference.direction)
    size_kji = np.asarray(size_vox, dtype=int)[::-1][order][::-1]
    spacing = np.asarray(spacing_mm, dtype=float)
    matrix = np.eye(4)
    matrix[:3, :3] = (reference.direction[:, order] * signs) @ np.diag(spacing)
    half_extent_ijk = (size_kji[::-1] - 1) / 2.0
    matrix[:3, 3] = np.asarray(center_ras, dtype=float) - matrix[:3, :3] @ half_extent_ijk
    return Grid(tuple(int(n) for n in size_kji), matrix)


#: The working grid's axis directions (RAS) when the CT is not oblique: i to the patient's left,
#: j posterior, k superior, as a NIfTI/DICOM image with identity direction is stored; the
#: shipped model was trained on such grids.
CANONICAL_DIRECTION = np.diag([-1.0, -1.0, 1.0])


def canonical_axes(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, signs)``: ``direction[:, order] * signs`` is ``direction`` with its axes
    permuted and flipped to lie closest to :data:`CANONICAL_DIRECTION` (columns = axes)."""
    import itertools

    best = max(itertools.permutations(range(3)), key=lambda perm: sum(
        abs(float(CANONICAL_DIRECTION[:, axis] @ direction[:, p])) for axis, p in enumerate(perm)))
    order = np.array(best)
    signs = np.sign(np.einsum("ij,ij->j", CANONICAL_DIRECTION, direction[:, order]))
    return order, np.where(signs == 0, 1.0, signs)


def bounding_box_in(grid: Grid, region: Grid) -> tuple[slice, slice, slice]:
    """``[k, j, i]`` slices of ``grid`` that cover ``region``'s extent (clipped to ``grid``)."""
    corners = grid.ras_to_index(region.corners_ras())
    low = np.floor(corners.min(axis=0)).astype(int)
    high = np.ceil(corners.max(axis=0)).astype(int) + 1
    shape_ijk = np.array(grid.shape[::-1])
    low = np.clip(low, 0, shape_ijk)
    high = np.clip(high, 0, shape_ijk)
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low[::-1], high[::-1]))


def sub_grid(grid: Grid, box: tuple[slice, slice, slice]) -> Grid:
    """The grid of ``grid[box]`` (``[k, j, i]`` slices with unit step)."""
    start_ijk = np.array([box[2].start, box[1].start, box[0].start], dtype=float)
    matrix = grid.ijk_to_ras.copy()
    matrix[:3, 3] = grid.index_to_ras(start_ijk)
    shape = tuple(s.stop - s.start for s in box)
    return Grid(shape, matrix)


def mask_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """Slices of the bounding box of a boolean array grown by ``pad`` voxels (clipped), or None.
    ``mask`` may be a CuPy array: only its per-axis projections leave the device."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        projection = mask.any(axis=other)
        hits = np.flatnonzero(projection if isinstance(projection, np.ndarray) else projection.get())
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - pad, 0), min(int(hits[-1]) + pad + 1, mask.shape[axis])))
    return tuple(box)


# ------------------------------------------------------------------ boxes
# A box is a tuple of three slices ``(k, j, i)`` into a grid of shape ``roi_shape``.
def window_box(center_kji, roi_shape, size, align: int = 1) -> tuple:
    """``[k, j, i]`` slices of a window of edge ``size`` around ``center_kji`` inside the ROI.

    The start is a multiple of ``align`` (the network's stride product, so the window's strided
    grid matches the full ROI's) and the window is shifted to lie inside ``roi_shape``; an axis
    shorter than ``size`` is taken whole.
    """
    sizes = size if np.ndim(size) else (size,) * 3
    box = []
    for centre, extent, edge in zip(center_kji, roi_shape, sizes):
        edge = min(int(edge), int(extent))
        start = int(round((int(centre) - edge / 2.0) / align)) * align
        start = max(0, min(start, int(extent) - edge))
        box.append(slice(start, start + edge))
    return tuple(box)


def covers(box, roi_shape) -> bool:
    """True when ``box`` is the whole ROI (the fast path would be a full pass)."""
    return all(s.start == 0 and s.stop == n for s, n in zip(box, roi_shape))


def blend_weights(box, roi_shape, margin: int) -> np.ndarray:
    """Weight of the window's output per window voxel (float32, window shape).

    1 in the interior; on a face that lies inside the ROI the weight ramps linearly from
    ``1 / (margin + 1)`` at the face to 1 at ``margin`` voxels in. Faces on the ROI's border keep
    weight 1: there the full-ROI pass sees the same zero padding as the window.
    """
    ramps = []
    for s, extent in zip(box, roi_shape):
        n = s.stop - s.start
        ramp = np.ones(n, dtype=np.float32)
        if margin > 0:
            up = np.minimum(1.0, (np.arange(n) + 1.0) / (margin + 1.0)).astype(np.float32)
            if s.start > 0:
                ramp = np.minimum(ramp, up)
            if s.stop < extent:
                ramp = np.minimum(ramp, up[::-1])
        ramps.append(ramp)
    return ramps[0][:, None, None] * ramps[1][None, :, None] * ramps[2][None, None, :]


def expand_box(box, roi_shape, pad: int) -> tuple:
    """``box`` grown by ``pad`` voxels per side, clipped to ``roi_shape``."""
    return tuple(
        slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(box, roi_shape)
    )


def intersect(a, b):
    """The intersection of two boxes, or None when empty (or ``b`` is None)."""
    if a is None or b is None:
        return None
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return None if any(s.stop <= s.start for s in out) else out


def support_box(indices, roi_shape, kernel: np.ndarray):
    """Bounding box of every click's Gaussian support (where guidance is non-zero), or None."""
    if not indices:
        return None
    radius = kernel.shape[0] // 2
    points = np.asarray(indices)
    low = np.maximum(points.min(axis=0) - radius, 0)
    high = np.minimum(points.max(axis=0) + radius + 1, np.asarray(roi_shape))
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))


def union(a, b):
    """The bounding box of two boxes (either may be None)."""
    if a is None or b is None:
        return b if a is None else a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))
