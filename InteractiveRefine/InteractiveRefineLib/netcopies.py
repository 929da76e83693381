"""Network copies for inference: instance-norm surgery and CPU layouts.

Nothing here changes a network it is given; every function returns a modified deep copy.

- :func:`cpu_network`: whole-ROI inference on the CPU: channels-last-3d, and each instance norm
  computed as batch normalisation with batch statistics (the same function for a batch of one).
- :func:`frozen_network`: the window refiner's copy, whose instance norms use statistics recorded
  on the whole ROI (:func:`record_norm_stats`), folded into the preceding convolutions; the first
  norm can stay separate (:func:`set_norm_stats`) so that its statistics follow each click
  exactly (:func:`first_norm`, :func:`conv_moments`).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from functools import lru_cache
from types import SimpleNamespace


def instance_norms(network):
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

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in instance_norms(network)]
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
    norms = instance_norms(network)
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
    heuristic sends small batch-1 inputs to a slower im2col path) and the network is put in
    channels-last-3d layout (feed it channels-last inputs).
    """
    import torch

    net = copy.deepcopy(network)
    names = dict(instance_norms(net))
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


def cpu_network(network):
    """A copy of ``network`` for whole-ROI inference on the CPU, in float32 or under bfloat16
    autocast: channels-last-3d, and each instance norm computed as batch normalisation with batch
    statistics (for a batch of one the same per-channel statistics over the volume, hence the
    same function; PyTorch's CPU instance norm copies channels-last activations to another layout
    and back, batch norm works on them in place). ``benchmarks/README.md`` has the timings."""
    import torch

    net = copy.deepcopy(network)
    for name, module in instance_norms(net):
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
