"""The paper's data augmentation (section 4.3) as MONAI dictionary transforms.

Spatial (all channels and the label): random affine with rotations up to 45 degrees about every
axis, scaling and shearing within +-0.1, translation within +-32 voxels (probability 0.5), and a
flip about each axis (probability 0.5 each). CT only: gamma contrast (0.5, 1.5), intensity shift
0.1, Gaussian noise (std 0.1) and Gaussian smoothing, each with probability 0.25.

The transforms run either in the DataLoader's worker processes on the CPU or on the training
device (``runtime.augment_on``). Randomness comes only from the Compose's own random state, which
is set from a per-sample seed drawn from the run's seed stream, so a sample's augmentation does
not depend on where or in which order it is computed.
"""
from __future__ import annotations

import math

import torch

SPATIAL_KEYS = ("ct", "pet", "label")


def build_augmentation(config: dict, image_channels, roi_size, device):
    """A MONAI ``Compose`` over keys ``ct``, ``pet`` (when present) and ``label``, or None."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandShiftIntensityd,
    )

    aug = config["augmentation"]
    if not aug.get("enabled", True):
        return None
    keys = ["ct"] + (["pet"] if "pet" in image_channels else []) + ["label"]
    modes = ["bilinear"] * (len(keys) - 1) + ["nearest"]
    rotate = math.radians(float(aug["rotate_deg"]))
    transforms = [
        RandAffined(
            keys, spatial_size=tuple(roi_size), prob=aug["affine_prob"], rotate_range=(rotate,) * 3,
            shear_range=(float(aug["shear"]),) * 6, translate_range=(float(aug["translate_vox"]),) * 3,
            scale_range=(float(aug["scale"]),) * 3, mode=modes, padding_mode=aug["padding_mode"],
            cache_grid=True, device=device,
        ),
    ]
    transforms += [RandFlipd(keys, prob=aug["flip_prob"], spatial_axis=axis) for axis in range(3)]
    sx = tuple(aug["ct_smooth_sigma"])
    transforms += [
        RandAdjustContrastd(["ct"], prob=aug["ct_contrast_prob"], gamma=tuple(aug["ct_gamma"])),
        RandShiftIntensityd(["ct"], offsets=aug["ct_shift_offset"], prob=aug["ct_shift_prob"]),
        RandGaussianNoised(["ct"], prob=aug["ct_noise_prob"], std=aug["ct_noise_std"]),
        RandGaussianSmoothd(["ct"], sigma_x=sx, sigma_y=sx, sigma_z=sx, prob=aug["ct_smooth_prob"]),
    ]
    return Compose(transforms)


def augment(transform, image: torch.Tensor, label: torch.Tensor):
    """Apply ``transform`` to one sample: ``image`` ``[C,k,j,i]`` (CT first), ``label`` ``[1,k,j,i]``.

    Returns new ``(image, label)`` tensors on the input device, label still binary.
    """
    if transform is None:
        return image, label
    sample = {"ct": image[:1], "label": label}
    if image.shape[0] > 1:
        sample["pet"] = image[1:2]
    out = transform(sample)
    channels = [out["ct"]] + ([out["pet"]] if "pet" in out else [])
    image = torch.cat([torch.as_tensor(c, device=image.device) for c in channels]).float()
    label = (torch.as_tensor(out["label"], device=image.device) > 0.5).float()
    return image.contiguous(), label.contiguous()
