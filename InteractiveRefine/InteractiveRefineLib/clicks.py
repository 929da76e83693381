"""Clicks and their guidance encoding.

A click is a RAS point (mm) with a sign. On the working grid each sign has one guidance channel:
1.0 at every click voxel, smoothed by a Gaussian (sigma in voxels, truncated at ``truncate``
sigmas, zero outside the grid), then min-max scaled to [0, 1]. This is MONAI DeepGrow's
``AddGuidanceSignald`` encoding, so the DeepGrow/DeepEdit baselines are comparable.

The Gaussian of a sum of impulses is the sum of stamped kernels, so a click only touches a
(2 * truncate * sigma + 1)^3 window: adding one costs microseconds instead of a full-volume filter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ClickError


@dataclass(frozen=True)
class Click:
    """A user click: ``ras`` in mm, ``positive`` True for missed tumour, False for a false positive.

    ``kind``: ``"point"`` (refined by the model) or ``"threshold"`` (a positive click that adds the
    PET threshold region around it, :mod:`.threshold`); ``options``: the kind's settings as
    ``(name, value)`` pairs (e.g. ``(("fraction", 0.4),)``). ``label``: the output class the click
    is about (a card output name, e.g. ``"gtvn"``); None on a positive click means the model's first
    class, on a negative click "not any class".
    """

    ras: tuple[float, float, float]
    positive: bool
    kind: str = "point"
    options: tuple = ()
    label: str | None = None

    def to_json(self) -> dict:
        out = {"ras": [float(v) for v in self.ras], "positive": bool(self.positive)}
        if self.kind != "point":
            out.update(kind=self.kind, **dict(self.options))
        if self.label is not None:
            out["label"] = self.label
        return out


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Separable 3D Gaussian kernel (peak 1.0) of radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]
    return kernel.astype(np.float32)


def stamp(channel: np.ndarray, index_kji, kernel: np.ndarray) -> tuple[slice, slice, slice]:
    """Add ``kernel`` centred at ``index_kji`` into ``channel`` in place; return the touched box."""
    radius = kernel.shape[0] // 2
    dst, src = [], []
    for axis, centre in enumerate(index_kji):
        lo, hi = int(centre) - radius, int(centre) + radius + 1
        dst.append(slice(max(lo, 0), min(hi, channel.shape[axis])))
        src.append(slice(max(lo, 0) - lo, kernel.shape[axis] - (hi - min(hi, channel.shape[axis]))))
    channel[tuple(dst)] += kernel[tuple(src)]
    return tuple(dst)


def scaled(channel: np.ndarray) -> np.ndarray:
    """Min-max scale a raw guidance channel to [0, 1] (all-zero stays all-zero)."""
    low, high = float(channel.min()), float(channel.max())
    if high - low <= 0:
        return np.zeros_like(channel)
    return (channel - low) / (high - low)


def encode_guidance(
    shape, positive_kji, negative_kji, sigma: float = 2.0, truncate: float = 4.0
) -> np.ndarray:
    """Guidance channels ``[2, k, j, i]`` (positive, negative) for voxel-index clicks."""
    kernel = gaussian_kernel(sigma, truncate)
    out = np.zeros((2,) + tuple(shape), dtype=np.float32)
    for channel, indices in zip(out, (positive_kji, negative_kji)):
        for index in indices:
            stamp(channel, index, kernel)
        channel[...] = scaled(channel)
    return out


def click_index(ct_grid, grid, ras) -> tuple:
    """Working-grid voxel ``(k, j, i)`` of a RAS point (mm) on ``grid`` (the ROI), which lies in
    the CT's ``ct_grid``; :class:`ClickError` naming the point when it is outside either."""
    ras = np.asarray(ras, dtype=float)
    if ras.shape != (3,) or not np.all(np.isfinite(ras)):
        raise ClickError(f"a click needs three finite RAS coordinates, got {ras.tolist()}")
    if not ct_grid.contains_index(ct_grid.ras_to_index(ras)):
        raise ClickError(f"click at RAS {np.round(ras, 1).tolist()} mm is outside the CT image")
    ijk = grid.ras_to_index(ras)
    if not grid.contains_index(ijk):
        raise ClickError(
            f"click at RAS {np.round(ras, 1).tolist()} mm is outside the region of interest "
            f"(centre {np.round(grid.center_ras(), 1).tolist()}, "
            f"{'x'.join(str(s) for s in grid.shape[::-1])} voxels)"
        )
    i, j, k = np.clip(np.rint(ijk).astype(int), 0, np.array(grid.shape[::-1]) - 1)
    return int(k), int(j), int(i)
