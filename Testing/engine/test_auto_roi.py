"""Automatic ROI placement (``InteractiveRefineLib.auto_roi``): without an ROI from the user, the
model's 144 mm box holds the head-and-neck field below the brain instead of the CT's centre.

On the real cases the measures are the ones a user sees on screen: is the whole tumour (GTVp) in
the box, and how much of the hot brain is. Brain voxels: PET SUV > 2.5, outside the GTVp, more
than 15 mm above the GTVp's top (CHGJ015: 46 mL; the 3.34 mm cases 236-507 mL).
Settings were chosen on CHGJ015 and the sarcoma cases; the four ``hecktor2020_lowres`` cases
are held out (a placement that fails there is marked, with its measured values, not tuned away).
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from InteractiveRefineLib import geometry
from InteractiveRefineLib.auto_roi import auto_roi_center
from InteractiveRefineLib.cli import main
from InteractiveRefineLib.errors import ImageError
from InteractiveRefineLib.geometry import Volume, read_volume
from InteractiveRefineLib.phantom import make_phantom
from InteractiveRefineLib.session import RefinementSession

from conftest import data_path

#: The shipped model's box: 72^3 voxels of 2 mm.
BOX_VOX, BOX_MM = (72, 72, 72), (2.0, 2.0, 2.0)
BRAIN_SUV, BRAIN_ABOVE_MM = 2.5, 15.0

CHGJ015 = ("hecktor2020_chgj015", "CHGJ015_ct.nii.gz", "CHGJ015_pt.nii.gz", "CHGJ015_ct_gtvt.nii.gz")


def _lowres(case):
    return ("hecktor2020_lowres", case, f"{case}__CT.nii.gz", f"{case}__PT.nii.gz", f"{case}.nii.gz")


def _load(parts):
    *folder, ct, pet, label = parts
    return tuple(read_volume(data_path(*folder, name)) for name in (ct, pet, label))


def _in_box(grid, center):
    """Voxels of ``grid`` inside the shipped model's box centred at ``center``."""
    return geometry.inside_mask(geometry.working_grid(grid, center, BOX_VOX, BOX_MM), grid)


def _gtv_fraction(label, center) -> float:
    """Fraction of the GTVp inside the box."""
    gtv = label.array > 0.5
    return float((gtv & _in_box(label.grid, center)).sum() / gtv.sum())


def _box_contents(ct, pet, label, center) -> tuple[float, float]:
    """(fraction of the GTVp inside the box, brain mL inside the box)."""
    gtv = label.array > 0.5
    fraction = _gtv_fraction(label, center)
    top_s = label.grid.index_to_ras(np.argwhere(gtv)[:, ::-1].astype(float))[:, 2].max()
    k = np.arange(pet.shape[0], dtype=float)
    s = pet.grid.index_to_ras(np.stack([np.zeros_like(k), np.zeros_like(k), k], axis=-1))[:, 2]
    gtv_on_pet = geometry.resample(label.array, label.grid, pet.grid, order=0) > 0.5
    brain = (pet.array > BRAIN_SUV) & ~gtv_on_pet & (s > top_s + BRAIN_ABOVE_MM)[:, None, None]
    voxel_ml = float(np.prod(pet.grid.spacing)) / 1000.0
    return fraction, float((brain & _in_box(pet.grid, center)).sum() * voxel_ml)


HELD_OUT_MISSES = {
    # Measured: the brain is not recognised (30% enclosed by bone), so the box is centred on the
    # body: the whole GTVp, and 60.5 mL of brain, as many as the CT-centred box.
    "CHGJ007": "brain not recognised on this held-out case: the body-centred box holds as much brain",
    # The tumour touches the brain's base: the box top 8 mm above that base leaves 18% of the
    # GTVp above the box (CT centre: all of it).
    "CHGJ038": "tumour just below the brain: the box top cuts the GTVp on this held-out case",
}


@pytest.mark.parametrize("case", ["CHGJ015", "CHGJ007", "CHGJ010", "CHGJ026", "CHGJ038"])
def test_the_automatic_box_holds_the_tumour_and_less_brain_than_the_ct_centre(case, request):
    if case in HELD_OUT_MISSES:
        request.applymarker(pytest.mark.xfail(reason=HELD_OUT_MISSES[case], strict=True))
    ct, pet, label = _load(CHGJ015 if case == "CHGJ015" else _lowres(case))
    placed = auto_roi_center(ct, pet, 144.0)
    assert placed.method == "below_brain", placed.reason
    gtv_auto, brain_auto = _box_contents(ct, pet, label, np.asarray(placed.center_ras))
    gtv_ct, brain_ct = _box_contents(ct, pet, label, ct.grid.center_ras())
    assert gtv_auto == 1.0
    assert brain_auto <= 0.7 * brain_ct
    assert placed.details["seconds"] < 0.5


def test_chgj015_box_sits_below_the_brain_and_holds_the_whole_tumour():
    ct, pet, label = _load(CHGJ015)
    placed = auto_roi_center(ct, pet, 144.0)
    gtv, brain = _box_contents(ct, pet, label, np.asarray(placed.center_ras))
    assert placed.method == "below_brain" and "brain" in placed.reason
    assert gtv == 1.0 and brain == 0.0  # CT centre: 46 mL of the cerebellum's uptake in the box
    assert _box_contents(ct, pet, label, ct.grid.center_ras())[1] > 40.0


def test_a_ct_without_pet_gets_a_box_centred_on_the_body():
    ct, _, label = _load(CHGJ015)
    placed = auto_roi_center(ct, None, 144.0)
    assert placed.method == "body" and "no PET" in placed.reason
    assert _gtv_fraction(label, np.asarray(placed.center_ras)) == 1.0
    # A body off the centre of a CT: the box follows the patient, not the empty air.
    array = np.full((40, 120, 120), -1000.0, np.float32)
    k, j, i = np.indices(array.shape)
    array[((i - 90) ** 2 + (j - 60) ** 2) < 25 ** 2] = 40.0  # a 50 mm neck 30 voxels to one side
    ijk_to_ras = np.diag([-2.0, -2.0, 3.0, 1.0])
    shifted = Volume.from_array(array, ijk_to_ras)
    placed = auto_roi_center(shifted, None, (144.0, 144.0, 144.0))
    body_centre = shifted.grid.index_to_ras((90.0, 60.0, 19.5))
    assert placed.method == "body"
    np.testing.assert_allclose(placed.center_ras, body_centre, atol=4.0)
    assert np.linalg.norm(np.asarray(placed.center_ras) - shifted.grid.center_ras()) > 50.0


def test_a_hot_sarcoma_at_the_top_of_a_thigh_scan_is_not_taken_for_a_brain():
    ct = read_volume(data_path("sts_ibsi", "STS_014", "STS_014__CT.nii.gz"))
    pet = read_volume(data_path("sts_ibsi", "STS_014", "STS_014__PT.nii.gz"))
    placed = auto_roi_center(ct, pet, 144.0)
    assert placed.method == "body" and "not a brain" in placed.reason
    # the box stays on the scan's S-I centre (the crop is centred on the tumour)
    assert abs(placed.center_ras[2] - ct.grid.center_ras()[2]) < 4.0


def test_no_body_falls_back_to_the_ct_centre_and_says_why():
    rng = np.random.default_rng(0)
    air = Volume.from_array(rng.normal(-1000.0, 5.0, (20, 30, 30)).astype(np.float32), np.eye(4))
    placed = auto_roi_center(air, None, 144.0)
    assert placed.method == "ct_centre" and "no body found" in placed.reason
    np.testing.assert_allclose(placed.center_ras, air.grid.center_ras())
    with pytest.raises(ImageError, match="ROI size must be positive"):
        auto_roi_center(air, None, (144.0, 0.0, 144.0))


def test_session_default_is_automatic_and_an_explicit_centre_wins(tiny_package):
    ct, pet, label = make_phantom(seed=0)
    session = RefinementSession(tiny_package, device="cpu")
    session.set_image(ct, pet)  # no ROI: automatic
    placed = session.roi_placement
    assert placed.method == "body" and placed.as_dict()["description"].startswith("automatic")
    # The phantom's neck is centred in its CT: the automatic box is the CT-centred one, and the
    # tumour (beside the centre) lies in it, so the phantom tests keep their meaning.
    np.testing.assert_allclose(session.grid.center_ras(), ct.grid.center_ras(), atol=2.5)
    assert session.initial().voxels >= 0
    gtv = np.argwhere(label.array > 0)[:, ::-1].astype(float)
    assert all(session.grid.contains_index(session.grid.ras_to_index(p)) for p in
               label.grid.index_to_ras(gtv[[0, -1]]))
    explicit = (5.0, -4.0, 3.0)
    session.set_image(ct, pet, roi_center_ras=explicit)
    np.testing.assert_allclose(session.grid.center_ras(), explicit, atol=1e-6)
    assert session.roi_placement.method == "explicit"
    session.set_image(ct, pet, roi_center_ras="ct")
    np.testing.assert_allclose(session.grid.center_ras(), ct.grid.center_ras(), atol=1e-6)
    assert session.roi_placement.method == "ct_centre"
    with pytest.raises(ImageError, match="'auto', 'ct' or three finite RAS numbers, got 'middle'"):
        session.set_image(ct, pet, roi_center_ras="middle")
    assert session.roi_placement.method == "ct_centre"  # a refused call changes nothing


def test_cli_prints_the_chosen_roi(tiny_package_dir, tmp_path, capsys):
    folder = data_path("hecktor2020_chgj015")
    base = ["segment", "--ct", str(folder / "CHGJ015_ct.nii.gz"), "--pet", str(folder / "CHGJ015_pt.nii.gz"),
            "--model", str(tiny_package_dir), "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "auto.nii.gz")]) == 0
    roi = json.loads(capsys.readouterr().out)["roi"]
    assert roi["method"] == "below_brain" and roi["description"] == "automatic (below the brain)"
    assert main(base + ["--out", str(tmp_path / "ct.nii.gz"), "--roi-center", "ct"]) == 0
    roi = json.loads(capsys.readouterr().out)["roi"]
    assert roi["method"] == "ct_centre" and roi["center_ras"] == pytest.approx([-5.0, 82.9, -173.3], abs=0.1)


def test_placement_is_fast_on_a_full_resolution_ct():
    ct, pet, _ = _load(CHGJ015)
    best = min(_timed(ct, pet) for _ in range(3))
    assert best < 0.5


def _timed(ct, pet) -> float:
    t0 = time.perf_counter()
    auto_roi_center(ct, pet, 144.0)
    return time.perf_counter() - t0
