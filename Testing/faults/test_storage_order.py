"""The mask must not depend on the order in which a volume is stored.

The same physical CT and PET, stored with an axis reversed, all axes reversed, or two axes
swapped, give the same mask on the CT grid: the working grid's axes are put in one canonical
order (``geometry.canonical_axes``), so the network sees the same input. The bound: at most
0.1 % of the mask's voxels may differ, each on the mask's border (one interpolation step of
float rounding); on these cases the masks are identical.
"""
from __future__ import annotations

import faults
import numpy as np
import pytest
from InteractiveRefineLib.geometry import read_volume
from InteractiveRefineLib.session import RefinementSession
from scipy import ndimage

from conftest import data_path

CASES = {
    "CHGJ015": (("hecktor2020_chgj015", "CHGJ015_ct.nii.gz"), ("hecktor2020_chgj015", "CHGJ015_pt.nii.gz")),
    "CHGJ007": (("hecktor2020_lowres", "CHGJ007", "CHGJ007__CT.nii.gz"),
                ("hecktor2020_lowres", "CHGJ007", "CHGJ007__PT.nii.gz")),
}
#: Storage orders: nibabel [i, j, k] axes reversed, or "T" for i and j swapped.
ORDERS = [(0, 1, 2), "T"]


def _mask(package, ct_path, pet_path):
    ct = read_volume(ct_path)
    session = RefinementSession(package, device="cpu", refine_mode="full", amp=False)
    session.set_image(ct, read_volume(pet_path), roi_center_ras="ct")  # the click below is near it
    session.initial()
    session.add_click(ct.grid.center_ras() + np.array([5.0, 0.0, 0.0]), True)
    return session.mask_on_ct()


def _stored(path, tmp_path, order):
    name = f"{order}_{path.name}"
    if order == "T":
        return faults.transposed(path, tmp_path, name)
    return faults.flipped(path, tmp_path, name, order)


def _back(mask, order):
    """The mask of a re-stored CT in the original CT's [k, j, i] order."""
    if order == "T":
        return np.swapaxes(mask, 1, 2)
    for axis in order:
        mask = np.flip(mask, 2 - axis)
    return mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_storage_order_does_not_change_the_mask(case, tiny_package, tmp_path):
    ct, pet = (data_path(*parts) for parts in CASES[case])
    reference = _mask(tiny_package, ct, pet).astype(bool)
    assert reference.any()
    border = reference ^ ndimage.binary_erosion(reference)
    border |= ndimage.binary_dilation(reference) & ~reference
    for order in ORDERS:
        mask = _back(_mask(tiny_package, _stored(ct, tmp_path, order), _stored(pet, tmp_path, order)),
                     order).astype(bool)
        differ = mask != reference
        assert differ.sum() <= 0.001 * reference.sum(), (order, int(differ.sum()))
        assert not (differ & ~border).any(), order
