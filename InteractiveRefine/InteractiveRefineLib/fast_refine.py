"""Local ("fast") refinement: refine only a window around the new click (FocalClick-style).

On 2 CPU cores the paper's refine network needs ~5-8 s for a 144^3 ROI, but ~0.3 s for a
64^3 window. The fast path therefore

1. picks a ``W^3`` window centred at the click, aligned to the network's stride product (so the
   window's down-sampling grid coincides with the full ROI's) and shifted to stay inside the ROI;
2. builds the 5 input channels only there (the guidance channels are exactly the full-ROI ones
   cropped: :func:`guidance_in_box`);
3. runs a copy of the refine network whose instance-normalisation statistics are *frozen*: they
   were recorded once, on the full ROI, in a calibration pass at the initial state
   (:func:`record_norm_stats`), and folded into the preceding convolutions
   (:func:`frozen_network`). A crop's own statistics differ from the 144^3 ROI's the network was
   trained with (a window around the tumour holds far more tumour and PET uptake); with frozen
   statistics the window's interior reproduces the full-ROI pass up to the statistics' drift
   and the zero padding at the window's faces;
4. blends the window's output into the previous probability with a linear ramp of ``margin``
   voxels on the window faces that lie inside the ROI (where zero padding replaced real context),
   so nothing outside the window changes and there is no seam (the session makes one exception:
   the first click after the initial state takes, outside the window, the calibration pass's
   output, the refine network's prediction with no click).

Everything here is deterministic: the same state and click give the same output.
"""
from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from .clicks import stamp

logger = logging.getLogger(__name__)

#: Default window edge (voxels): 64^3 takes ~0.3-0.45 s on 2 CPU cores for the paper network
#: (80^3 ~0.65 s, 96^3 ~1.25 s, 144^3 ~4.7 s, all measured with frozen statistics off).
DEFAULT_WINDOW = 64
#: Width (voxels) of the blending ramp on window faces inside the ROI.
DEFAULT_MARGIN = 8


# ----------------------------------------------------------------------------- the window
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


#: A window "leaks" when its prediction changes the mask on more than this fraction of the voxels
#: of an inner face layer (``margin`` voxels in from a face inside the ROI): the click's change
#: then likely reaches past the window, and the session retries with a larger one.
LEAK_FRACTION = 0.01
#: Each retry multiplies the window edge by this (64 -> 96 -> 144, the paper's whole ROI).
GROWTH = 1.5


def leaks(box, roi_shape, margin: int, before: np.ndarray, after: np.ndarray,
          fraction: float = LEAK_FRACTION) -> bool:
    """True when the boolean masks ``before``/``after`` (window shape) differ on more than
    ``fraction`` of an inner face layer's voxels, for a face of ``box`` that lies inside the ROI."""
    for axis, (s, extent) in enumerate(zip(box, roi_shape)):
        n = s.stop - s.start
        depth = min(margin, n - 1)
        for inside, layer in ((s.start > 0, depth), (s.stop < extent, n - 1 - depth)):
            if not inside:
                continue
            a = np.take(before, layer, axis=axis)
            b = np.take(after, layer, axis=axis)
            if np.count_nonzero(a != b) > fraction * a.size:
                return True
    return False


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


# ------------------------------------------------------------------------- guidance channels
def guidance_in_box(shape, indices, positives, kernel: np.ndarray, box) -> np.ndarray:
    """Guidance channels ``[2, k, j, i]`` restricted to ``box``, equal to the full ones cropped.

    The full encoding stamps a Gaussian per click and min-max scales each channel over the whole
    ROI. Stamping is local; the scale needs the channel's global maximum (attained within some
    click's kernel support, so it is found by stamping around each click) and its minimum (0
    unless the kernel supports cover the ROI, checked by volume; then the full channel is built).
    """
    window_shape = tuple(s.stop - s.start for s in box)
    origin = np.array([s.start for s in box])
    radius = kernel.shape[0] // 2
    out = np.zeros((2,) + window_shape, dtype=np.float32)
    for channel, sign in enumerate((True, False)):
        chosen = [np.asarray(ix) for ix, p in zip(indices, positives) if bool(p) is sign]
        if not chosen:
            continue
        raw = out[channel]
        for index in chosen:
            local = index - origin
            if np.all(local + radius >= 0) and np.all(local - radius < window_shape):
                stamp(raw, local, kernel)
        low, high = _channel_range(shape, chosen, kernel, radius)
        if high - low <= 0:
            raw[...] = 0.0
        else:
            raw[...] = (raw - low) / (high - low)
    return out


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


# ----------------------------------------------------------------- frozen normalisation
def _instance_norms(network):
    import torch

    return [
        (name, module) for name, module in network.named_modules()
        if isinstance(module, torch.nn.modules.instancenorm._InstanceNorm)
    ]


@contextmanager
def record_norm_stats(network, stats: dict):
    """While active, every instance norm of ``network`` stores its input's per-channel
    ``(mean, var)`` (biased, as instance norm uses) in ``stats[name]``; outputs are unchanged."""
    import torch

    def hook(name):
        def store(module, inputs):
            x = inputs[0]
            var, mean = torch.var_mean(x.float(), dim=tuple(range(2, x.ndim)), unbiased=False)
            stats[name] = (mean.detach().clone(), var.detach().clone())
        return store

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in _instance_norms(network)]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def first_norm(network):
    """``(name, conv)``: the network's first instance norm (in forward order) and the
    convolution that feeds it directly (MONAI ``Convolution``: conv, then ``adn`` whose first
    layer is the norm). Its input is a linear function of the network's input, so its statistics
    can be kept exact for any input by convolving only where the input changed
    (:func:`conv_moments`)."""
    norms = _instance_norms(network)
    if not norms:
        raise RuntimeError("the network has no instance norm")
    name, norm = norms[0]
    for conv, _, _, first in _conv_blocks(network):
        if first is norm:
            return name, conv
    raise RuntimeError(f"no convolution feeds the first instance norm {name!r} directly")


def conv_moments(conv, x, out_box=None):
    """Per-channel ``(sum, sum of squares)`` (float64, shape ``[C]``) of ``conv(x)`` over
    ``out_box`` (slices into the output, default everything)."""
    import torch

    y = conv(x)
    if out_box is not None:
        y = y[(slice(None), slice(None)) + tuple(out_box)]
    y = y.double()
    dims = tuple(range(2, y.ndim))
    return torch.sum(y, dim=dims)[0], torch.sum(y * y, dim=dims)[0]


def moments_to_stats(moments, count: int):
    """``(mean, var)`` as :func:`record_norm_stats` stores them, from ``(sum, sum of squares)``
    over ``count`` voxels (biased variance, as instance norm uses)."""
    s1, s2 = moments
    mean = s1 / count
    var = (s2 / count - mean * mean).clamp_min(0.0)
    return mean.float()[None], var.float()[None]


def _conv_blocks(network):
    """``(conv, adn, name, module)`` of every MONAI ``Convolution`` block of ``network``: a
    convolution followed by ``adn``, whose first layer is ``module`` (named ``name`` in ``adn``)."""
    import torch

    for _, block in network.named_modules():
        conv, adn = getattr(block, "conv", None), getattr(block, "adn", None)
        if conv is None or adn is None or not isinstance(conv, torch.nn.modules.conv._ConvNd):
            continue
        children = list(adn.named_children())
        if children:
            yield conv, adn, children[0][0], children[0][1]


def _norm_affine(module, mean, var):
    """``(scale, shift)`` with ``norm(x) == x * scale + shift`` for frozen ``mean``/``var``."""
    import torch

    scale = torch.rsqrt(var + module.eps)
    shift = -mean * scale
    if module.affine and module.weight is not None:
        scale = scale * module.weight.detach()
        shift = shift * module.weight.detach() + module.bias.detach()
    return scale.reshape(-1), shift.reshape(-1)


def frozen_network(network, stats: dict, cpu_layout: bool = True, unfolded=()):
    """A copy of ``network`` whose instance norms use ``stats`` (from :func:`record_norm_stats`).

    Norms named in ``unfolded`` stay separate ``x * scale + shift`` modules whose statistics
    :func:`set_norm_stats` can change later without copying the network again.

    A norm that directly follows a convolution (MONAI ``Convolution``: conv, then ``adn`` whose
    first layer is the norm) is folded into the convolution's weights and bias, which removes the
    norm's pass over the data; any other norm becomes a per-channel ``x * scale + shift``.
    With ``cpu_layout`` (for the CPU), 3D convolutions call oneDNN directly (PyTorch's
    heuristic sends batch-1 inputs with ``C * D * H <= 20480`` to a slow im2col path: the first
    5-channel convolution of a 64^3 window took ~310 ms instead of ~40 ms) and the network is put
    in channels-last-3d layout (feed it channels-last inputs). Paper network, 64^3 window, one
    thread, measured interleaved: 0.76 s as is, 0.73 s folded, 0.52 s folded + oneDNN, 0.40 s
    folded + oneDNN + channels-last (the layout alone, without oneDNN: 0.62 s).
    """
    import torch

    net = copy.deepcopy(network)
    names = dict(_instance_norms(net))
    missing = sorted(set(names) - set(stats))
    if missing:
        raise RuntimeError(f"no recorded statistics for instance norm(s) {missing[:3]}")
    folded = set()
    with torch.no_grad():
        for conv, adn, child, norm in list(_conv_blocks(net)):
            name = next((n for n, m in names.items() if m is norm), None)
            if name is None or name in unfolded:
                continue
            scale, shift = _norm_affine(norm, *stats[name])
            _fold_into_conv(conv, scale, shift)
            setattr(adn, child, torch.nn.Identity())
            folded.add(name)
        for name, norm in names.items():
            if name not in folded:
                _replace_module(net, name, _modules().FrozenNorm(*_norm_affine(norm, *stats[name])))
    if cpu_layout:
        _cpu_layout(net)
    return net.eval()


def set_norm_stats(frozen, original, name: str, mean, var) -> None:
    """Give the unfolded norm ``name`` of ``frozen`` (see :func:`frozen_network`) the statistics
    ``mean``/``var``; ``original`` is the network it was copied from (for the norm's affine)."""
    import torch

    scale, shift = _norm_affine(original.get_submodule(name), mean, var)
    module = frozen.get_submodule(name)
    with torch.no_grad():
        module.scale.copy_(scale.reshape(module.scale.shape))
        module.shift.copy_(shift.reshape(module.shift.shape))


def onednn_network(network):
    """A copy of ``network`` in the CPU layout of :func:`frozen_network` (oneDNN convolutions,
    channels-last-3d) with its instance norms as they are: the statistics of whatever it is
    given, e.g. a window."""
    net = copy.deepcopy(network)
    _cpu_layout(net)
    return net.eval()


def cpu_network(network):
    """A copy of ``network`` for whole-ROI inference on the CPU, in float32 or under bfloat16
    autocast: channels-last-3d, and each instance norm computed as batch normalisation with batch
    statistics (for a batch of one the same per-channel statistics over the volume, hence the
    same function; PyTorch's CPU instance norm copies channels-last activations to another layout
    and back, batch norm works on them in place). The default network (channels 8-64) on a 144^3
    ROI, 2 cores, forward pass alone: 2.2 s float32, 1.5 s bfloat16 autocast, 0.96 s also
    channels-last, 0.65-0.75 s also with these norms; float32 with this copy 0.9-1.3 s against
    2.0-2.5 s (throwaway timing runs of the forward pass alone; README, "Performance", has the
    per-click figures of ``benchmarks/click_latency.py``)."""
    import torch

    net = copy.deepcopy(network)
    for name, module in _instance_norms(net):
        if type(module) is torch.nn.InstanceNorm3d and not module.track_running_stats:
            _replace_module(net, name, _modules().BatchStatsInstanceNorm3d(module))
    net.to(memory_format=torch.channels_last_3d)
    return net.eval()


def _cpu_layout(net) -> None:
    import torch

    if _onednn_available():
        for name, module in list(net.named_modules()):
            if type(module) is torch.nn.Conv3d:
                _replace_module(net, name, _modules().OneDnnConv3d(module))
    net.to(memory_format=torch.channels_last_3d)


def _fold_into_conv(conv, scale, shift) -> None:
    """``conv`` followed by ``x * scale + shift`` (per output channel) as one convolution."""
    import torch

    weight = conv.weight
    out_axis = 1 if conv.transposed else 0
    shape = [1] * weight.ndim
    shape[out_axis] = -1
    weight.mul_(scale.reshape(shape).to(weight.dtype))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    new_bias = bias.detach() * scale + shift
    conv.bias = torch.nn.Parameter(new_bias.to(weight.dtype), requires_grad=False)


def _replace_module(root, dotted: str, new) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _onednn_available() -> bool:
    import torch

    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.aten, "mkldnn_convolution")


@lru_cache(maxsize=None)
def _modules():
    """The torch modules of the fast path (built on first use: the engine imports torch lazily)."""
    import torch

    class FrozenNorm(torch.nn.Module):
        """Instance norm with frozen statistics: ``x * scale + shift`` per channel."""

        def __init__(self, scale, shift):
            super().__init__()
            self.register_buffer("scale", scale.reshape(1, -1, 1, 1, 1))
            self.register_buffer("shift", shift.reshape(1, -1, 1, 1, 1))

        def forward(self, x):
            return torch.addcmul(self.shift, x, self.scale)

    class OneDnnConv3d(torch.nn.Module):
        """A ``Conv3d`` that always takes oneDNN's kernel on CPU (same weights, same result)."""

        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            c = self.conv
            if (x.device.type != "cpu" or x.dtype != torch.float32 or c.padding_mode != "zeros"
                    or isinstance(c.padding, str) or torch.is_autocast_enabled("cpu")):
                return c(x)
            return torch.ops.aten.mkldnn_convolution(
                x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups
            )

    class BatchStatsInstanceNorm3d(torch.nn.InstanceNorm3d):
        """``InstanceNorm3d`` (same parameters, same function) that normalises a batch of one
        through batch normalisation with batch statistics: per channel over the whole volume,
        without changing the input's memory layout (:func:`cpu_network`)."""

        def __init__(self, norm):
            super().__init__(norm.num_features, eps=norm.eps, momentum=norm.momentum,
                             affine=norm.affine, track_running_stats=False)
            if norm.affine:
                self.weight, self.bias = norm.weight, norm.bias

        def forward(self, x):
            if x.shape[0] != 1:
                return super().forward(x)
            return torch.nn.functional.batch_norm(
                x, None, None, self.weight, self.bias, training=True, momentum=0.0, eps=self.eps
            )

    return SimpleNamespace(FrozenNorm=FrozenNorm, OneDnnConv3d=OneDnnConv3d,
                           BatchStatsInstanceNorm3d=BatchStatsInstanceNorm3d)
