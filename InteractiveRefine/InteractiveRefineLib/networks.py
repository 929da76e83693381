"""Network construction from the model card (one place, used by the engine and training)."""
from __future__ import annotations

from .card import default_stages, size_divisor_of

#: The 2S-ICR paper's configuration (section 4.2): MONAI UNet, stride 1 first.
PAPER_NETWORK = {
    "architecture": "monai.networks.nets.UNet",
    "channels": [16, 32, 64, 128, 256],
    "strides": [1, 2, 2, 2],
    "num_res_units": 2,
    "norm": "INSTANCE",
}

#: A network small enough for tests and pipeline checks on 2 CPU cores (same family as the
#: paper's); random weights only (``interactive-refine create-model --tiny``, the tests, the
#: module's self-test, the benchmarks' ``--random-tiny-model``).
TINY_NETWORK = {"channels": [4, 8, 16, 32], "strides": [1, 2, 2], "num_res_units": 1, "norm": "INSTANCE"}
#: The ROI (voxels ``k, j, i``) of tiny test packages.
TINY_ROI = (48, 48, 48)


def in_channels(stage: str, image_channels: int) -> int:
    """Input channels of ``stage`` in the classic card layout with ``image_channels`` images
    (:func:`card.default_stages`; a loaded package's own layout is ``spec.stages[stage]``)."""
    return default_stages([f"image_{i}" for i in range(image_channels)])[stage].in_channels


def build_network(config: dict, in_channels: int, out_channels: int = 1):
    """A MONAI ``UNet`` (3D, ``out_channels`` output logit channels: one per output class, 1 for a
    one-class card) from a card's ``network`` section; its
    ``dropout`` (e.g. 0.05, HN-UISeg's MC-dropout rate) adds dropout after every convolution,
    absent or 0 adds none (the same modules as before the key existed)."""
    from monai.networks.nets import UNet

    extra = {"dropout": float(config["dropout"])} if float(config.get("dropout") or 0.0) > 0 else {}
    return UNet(
        spatial_dims=3,
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        channels=tuple(int(c) for c in config["channels"]),
        strides=tuple(int(s) for s in config["strides"]),
        num_res_units=int(config.get("num_res_units", 2)),
        norm=config.get("norm", "INSTANCE"),
        **extra,
    )


def select_outputs(network, indices):
    """``network`` giving only its output channels ``indices`` (in that order): a member trained
    for more classes than its card's outputs (the card's member ``outputs``). The wrapped network
    is its ``source`` attribute (its weights, unprefixed)."""
    import torch

    class SelectOutputs(torch.nn.Module):
        def __init__(self, source, channels):
            super().__init__()
            self.source = source
            self.register_buffer("channels", torch.tensor(list(channels), dtype=torch.long), persistent=False)

        def forward(self, x):
            return self.source(x).index_select(1, self.channels)

    return SelectOutputs(network, indices)


def unwrapped(network):
    """The trained network of a package member (:func:`select_outputs`' ``source``, or itself)."""
    return getattr(network, "source", network)


def size_divisor(config: dict) -> int:
    """Spatial sizes the network accepts must be multiples of this (product of strides)."""
    return size_divisor_of(config)
