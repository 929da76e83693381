"""The interaction inputs: the previous probability and the click guidance channels.

The guidance of a sign is the 2S-ICR encoding: a Gaussian stamped at each click of that sign,
min-max scaled over the whole ROI. It is built only where some click's Gaussian reaches (exactly
the full encoding there, zero elsewhere; :func:`guidance_in_box`), so neither a whole-ROI pass
nor a window moves or scales whole-ROI guidance arrays per click.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from .. import geometry
from ..clicks import gaussian_kernel, stamp
from . import register


@lru_cache(maxsize=8)
def kernel_for(sigma_vox: float, truncate: float) -> np.ndarray:
    return gaussian_kernel(float(sigma_vox), float(truncate))


def click_kernel(spec) -> np.ndarray:
    """The Gaussian kernel of a clicks input (card options ``sigma_vox``, ``truncate``)."""
    return kernel_for(float(spec.options.get("sigma_vox", 2.0)), float(spec.options.get("truncate", 4.0)))


def tensor_of(array: np.ndarray):
    """A torch view of a (possibly read-only) numpy array, for copying from."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only history arrays are only read
        return torch.from_numpy(array)


@register("previous_probability")
class PreviousProbability:
    static, local = False, True

    def fill(self, out, spec, ctx, box) -> None:
        if ctx.device_probability is not None:  # already on the device: no host-to-device copy
            out[0].copy_(ctx.device_probability[tuple(box)])
            return
        out[0].copy_(tensor_of(ctx.probability[tuple(box)]))  # converts and moves in one pass


class _Clicks:
    static, local = False, True
    positive = True

    def fill(self, out, spec, ctx, box) -> None:
        import torch

        out.zero_()
        kernel = click_kernel(spec)
        shape = ctx.image.grid.shape
        reach = geometry.intersect(box, geometry.support_box(ctx.indices, shape, kernel))
        chosen = [ix for ix, p in zip(ctx.indices, ctx.positives) if bool(p) is self.positive]
        if reach is None or not chosen:
            return
        guidance = guidance_in_box(shape, chosen, kernel, reach)
        local = tuple(slice(r.start - b.start, r.stop - b.start) for r, b in zip(reach, box))
        out[0][local] = torch.from_numpy(guidance).to(out.device)


@register("clicks_positive")
class PositiveClicks(_Clicks):
    positive = True


@register("clicks_negative")
class NegativeClicks(_Clicks):
    positive = False


def guidance_in_box(shape, chosen, kernel: np.ndarray, box) -> np.ndarray:
    """The guidance channel of the clicks ``chosen`` (working-grid indices) restricted to
    ``box`` (float32), equal to the full channel cropped.

    Stamping is local; the scale needs the channel's global maximum (attained within some
    click's kernel support, so it is found by stamping around each click) and its minimum (0
    unless the kernel supports cover the ROI, checked by volume; then the full channel is built).
    """
    window_shape = tuple(s.stop - s.start for s in box)
    origin = np.array([s.start for s in box])
    radius = kernel.shape[0] // 2
    chosen = [np.asarray(ix) for ix in chosen]
    raw = np.zeros(window_shape, dtype=np.float32)
    for index in chosen:
        local = index - origin
        if np.all(local + radius >= 0) and np.all(local - radius < window_shape):
            stamp(raw, local, kernel)
    low, high = _channel_range(shape, chosen, kernel, radius)
    if high - low <= 0:
        raw[...] = 0.0
    else:
        raw[...] = (raw - low) / (high - low)
    return raw


def _channel_range(shape, chosen, kernel, radius) -> tuple:
    """Global (min, max) of the raw stamped channel of the clicks ``chosen``."""
    support = kernel.shape[0] ** 3 * len(chosen)
    if support >= int(np.prod(shape)):  # the supports might cover the ROI: build it whole
        full = np.zeros(tuple(shape), dtype=np.float32)
        for index in chosen:
            stamp(full, index, kernel)
        return float(full.min()), float(full.max())
    high = 0.0
    for centre in chosen:  # the maximum lies inside some click's support
        local_box = tuple(
            slice(max(int(c) - radius, 0), min(int(c) + radius + 1, n)) for c, n in zip(centre, shape)
        )
        local_origin = np.array([s.start for s in local_box])
        local = np.zeros(tuple(s.stop - s.start for s in local_box), dtype=np.float32)
        for index in chosen:
            if np.all(np.abs(index - centre) <= 2 * radius):
                stamp(local, index - local_origin, kernel)
        high = max(high, float(local.max()))
    return 0.0, high
