"""The interaction inputs: the previous probability and the click guidance channels.

The guidance of a sign is the 2S-ICR encoding: a Gaussian stamped at each click of that sign,
min-max scaled over the whole ROI. It is built only where some click's Gaussian reaches (exactly
the full encoding there, zero elsewhere; :func:`guidance_in_box`), so neither a whole-ROI pass
nor a window moves or scales whole-ROI guidance arrays per click.

A multi-class card's ``clicks_positive`` has one channel per class (channel c: the positive clicks
of class c, each channel encoded and scaled on its own) and its ``previous_probability`` one
channel per class; ``clicks_negative`` holds every negative click, whatever its class.
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
        # one class: [k, j, i] into channel 0; C classes: [C, k, j, i] into the C channels
        where = tuple(box) if ctx.probability.ndim == 3 else (slice(None),) + tuple(box)
        target = out[0] if ctx.probability.ndim == 3 else out
        if ctx.device_probability is not None:  # already on the device: no host-to-device copy
            target.copy_(ctx.device_probability[where])
            return
        target.copy_(tensor_of(ctx.probability[where]))  # converts and moves in one pass


class _Clicks:
    static, local = False, True
    positive = True

    def fill(self, out, spec, ctx, box) -> None:
        import torch

        out.zero_()
        kernel = click_kernel(spec)
        shape = ctx.image.grid.shape
        reach = geometry.intersect(box, geometry.support_box(ctx.indices, shape, kernel))
        if reach is None:
            return
        local = tuple(slice(r.start - b.start, r.stop - b.start) for r, b in zip(reach, box))
        for channel, chosen in enumerate(self.chosen(ctx, spec.channels)):
            if chosen:
                guidance = guidance_in_box(shape, chosen, kernel, reach)
                out[channel][local] = torch.from_numpy(guidance).to(out.device)

    def chosen(self, ctx, channels: int) -> list:
        """Per channel, the working-grid indices of its clicks: this sign's clicks, and with
        several channels (one per class, positive clicks) those of the channel's class."""
        mine = [(ix, c) for ix, p, c in zip(ctx.indices, ctx.positives, ctx.labels or (0,) * len(ctx.indices))
                if bool(p) is self.positive]
        if channels == 1:
            return [[ix for ix, _ in mine]]
        return [[ix for ix, c in mine if c == channel] for channel in range(channels)]


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
