"""Network construction from the model card (one place, used by the engine and training)."""
from __future__ import annotations

#: The 2S-ICR paper's configuration (section 4.2): MONAI UNet, stride 1 first.
PAPER_NETWORK = {
    "architecture": "monai.networks.nets.UNet",
    "channels": [16, 32, 64, 128, 256],
    "strides": [1, 2, 2, 2],
    "num_res_units": 2,
    "norm": "INSTANCE",
}

#: Input channels of each stage: initial = image channels; refine adds previous probability,
#: positive and negative guidance.
REFINE_EXTRA_CHANNELS = 3


def in_channels(stage: str, image_channels: int) -> int:
    return image_channels + (REFINE_EXTRA_CHANNELS if stage == "refine" else 0)


def build_network(config: dict, in_channels: int):
    """A MONAI ``UNet`` (3D, one output logit channel) from a card's ``network`` section."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=int(in_channels),
        out_channels=1,
        channels=tuple(int(c) for c in config["channels"]),
        strides=tuple(int(s) for s in config["strides"]),
        num_res_units=int(config.get("num_res_units", 2)),
        norm=config.get("norm", "INSTANCE"),
    )


def size_divisor(config: dict) -> int:
    """Spatial sizes the network accepts must be multiples of this (product of strides)."""
    divisor = 1
    for stride in config["strides"]:
        divisor *= int(stride)
    return divisor
