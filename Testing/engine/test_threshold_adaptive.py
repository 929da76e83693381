"""The background-corrected (source-to-background) PET threshold, ``method="background"``:
PET >= SUVbg + f x (SUVmax - SUVbg), SUVbg the median SUV 10-20 mm outside the 40 % region.
Its analytic region on a phantom of known uptake and background, its identity with the fixed
fraction on a zero background, a click that undo and confirm replay exactly, the refusal of an
unknown method, and the command line's ``--threshold-method``."""
from __future__ import annotations

import numpy as np
import pytest
from InteractiveRefineLib.errors import ThresholdError
from InteractiveRefineLib.geometry import Volume
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.threshold import shell_background, threshold_options, threshold_region

SHAPE = (64, 64, 64)  # 1 mm voxels; identity geometry: RAS = (i, j, k)
CENTRE = (32, 32, 32)  # the lesion's centre (k, j, i)
OTHER = (32, 32, 8)  # a point far from the lesion, for a model click
PEAK, BACKGROUND = 8.0, 2.0
CORE_MM, EDGE_MM = 6.0, 14.0  # uptake PEAK to CORE_MM, falling linearly to the background at EDGE_MM


def _radius(centre=CENTRE):
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")
    return np.sqrt((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2)


def _lesion(background: float) -> np.ndarray:
    """SUV ``PEAK`` inside ``CORE_MM``, a linear edge to ``background`` at ``EDGE_MM``."""
    share = np.clip((EDGE_MM - _radius()) / (EDGE_MM - CORE_MM), 0.0, 1.0)
    return (background + (PEAK - background) * share).astype(np.float32)


def _radius_at(level: float, background: float) -> float:
    """The radius (mm) where the lesion's edge crosses ``level``."""
    return EDGE_MM - (EDGE_MM - CORE_MM) * (level - background) / (PEAK - background)


def _ras(kji):
    return np.array(kji[::-1], dtype=float)


@pytest.fixture(scope="module")
def images():
    pet = _lesion(BACKGROUND)
    ct = np.where(pet > BACKGROUND, 40.0, 20.0).astype(np.float32)
    return Volume.from_array(ct, np.eye(4)), Volume.from_array(pet, np.eye(4))


@pytest.mark.parametrize("fraction", [0.41, 0.5])
def test_the_background_corrected_region_of_a_known_lesion_is_where_it_is_computed(images, fraction):
    """SUV 8 on a background of 2: the 40 % region (SUV >= 3.2) is the ball of 12.4 mm, the
    shell 10-20 mm outside it is all background, so SUVbg = 2 and the threshold is 2 + f x 6
    (5.0 at f = 0.5: the ball of 10 mm; the fixed 50 % region, SUV >= 4, is the ball of 11.3 mm)."""
    _, pet = images
    region = threshold_region(pet, _ras(CENTRE) + [0, 3.0, 0], fraction, method="background")
    level = BACKGROUND + fraction * (PEAK - BACKGROUND)
    assert region.method == "background" and region.background == pytest.approx(BACKGROUND)
    assert region.suvmax == pytest.approx(PEAK) and region.threshold == pytest.approx(level)
    expected = _radius() <= _radius_at(level, BACKGROUND) + 1e-6
    assert np.array_equal(region.mask, expected)
    fixed = threshold_region(pet, _ras(CENTRE), fraction)
    assert np.array_equal(fixed.mask, _radius() <= _radius_at(fraction * PEAK, BACKGROUND) + 1e-6)
    assert region.mask.sum() < fixed.mask.sum()  # the background lowers the contrast: a tighter region
    summary = region.summary()
    assert summary["method"] == "background" and summary["background_suv"] == pytest.approx(BACKGROUND)
    assert fixed.summary()["method"] == "fixed" and "background_suv" not in fixed.summary()


def test_the_shell_median_ignores_air_and_the_lesion(images):
    """The shell lies 10-20 mm outside the region; voxels in air (SUV <= 0.05) do not count."""
    _, pet = images
    region = _radius() <= 12.4
    assert shell_background(pet, region) == pytest.approx(BACKGROUND)
    half_air = pet.array.copy()
    half_air[:, :, :20] = 0.0  # air on one side of the lesion
    assert shell_background(Volume.from_array(half_air, np.eye(4)), region) == pytest.approx(BACKGROUND)


@pytest.mark.parametrize("fraction", [0.4, 0.5])
def test_on_a_zero_background_it_is_the_fixed_fraction(fraction):
    pet = Volume.from_array(_lesion(0.0), np.eye(4))
    adaptive = threshold_region(pet, _ras(CENTRE), fraction, method="background")
    fixed = threshold_region(pet, _ras(CENTRE), fraction)
    assert adaptive.background == 0.0 and adaptive.threshold == fixed.threshold
    assert np.array_equal(adaptive.mask, fixed.mask) and adaptive.volume_ml == fixed.volume_ml


def test_the_fixed_method_keeps_its_options_and_region_bit_for_bit(images):
    """Old calls: no ``method`` entry in the click's options, the same region as before."""
    assert threshold_options() == (("fraction", 0.4), ("radius_mm", 10.0), ("min_suvmax", 2.0))
    assert threshold_options(0.5, method="fixed") == threshold_options(0.5)
    assert dict(threshold_options(0.5, method="background"))["method"] == "background"
    _, pet = images
    old = threshold_region(pet, _ras(CENTRE), 0.4)
    assert old.method == "fixed" and old.background is None and old.threshold == 0.4 * PEAK
    assert np.array_equal(old.mask, pet.array >= 0.4 * PEAK)  # one connected ball here


def _session(tiny_package, images, **options):
    session = RefinementSession(tiny_package, device="cpu", refine_mode="full", **options)
    session.set_image(*images, roi_center_ras=_ras(CENTRE))
    session.initial()
    return session


def test_an_adaptive_region_lives_in_the_history_and_undo_is_exact(tiny_package, images):
    session = _session(tiny_package, images)
    initial = session.mask_on_ct().copy()
    result = session.add_threshold(_ras(CENTRE), 0.5, method="background")
    details = result.details["threshold"]
    assert result.mode == "threshold" and details["method"] == "background"
    assert details["background_suv"] == pytest.approx(BACKGROUND)
    assert details["threshold_suv"] == pytest.approx(5.0)
    assert dict(session.clicks[0].options)["method"] == "background"
    mask = session.mask_on_ct().astype(bool)
    ball = _radius() <= 10.0 + 1e-6
    assert (mask == ball).mean() > 0.999 and abs(int(mask.sum()) - int(ball.sum())) < 0.05 * ball.sum()
    after = session.mask_on_ct().copy()
    session.add_click(_ras(OTHER), True)
    session.undo()
    assert np.array_equal(session.mask_on_ct(), after)  # exact
    session.undo()
    assert np.array_equal(session.mask_on_ct(), initial) and session.step == 0
    fixed = session.add_threshold(_ras(CENTRE), 0.5)  # the fixed 50 %: the 11.3 mm ball
    assert fixed.details["threshold"]["method"] == "fixed" and session.mask_on_ct().sum() > after.sum()


def test_a_confirm_replays_the_adaptive_click(tiny_package, images):
    """Previews recomputed by confirm() replay the click from its options: the same region."""
    session = _session(tiny_package, images, amp=True)
    reference = _session(tiny_package, images, amp=False)
    for s in (session, reference):
        s.add_threshold(_ras(CENTRE), 0.5, method="background")
        s.add_click(_ras(OTHER), True)
    session.confirm()
    assert [c.kind for c in session.clicks] == ["threshold", "point"]
    assert np.array_equal(session.mask_on_ct(), reference.mask_on_ct())


def test_an_unknown_method_is_refused_changing_nothing(tiny_package, images):
    session = _session(tiny_package, images)
    session.add_click(_ras(OTHER), True)
    before = session.mask_on_ct().copy()
    with pytest.raises(ThresholdError, match="unknown threshold method 'gradient'.*fixed, background"):
        session.add_threshold(_ras(CENTRE), method="gradient")
    assert session.step == 1 and np.array_equal(session.mask_on_ct(), before)
    with pytest.raises(ThresholdError, match="unknown threshold method"):
        threshold_region(images[1], _ras(CENTRE), method="edge")


def test_no_contrast_above_the_background_is_refused(images):
    """A small spot of SUV 3 in a cold gap (SUV 0.5, 12 mm: beyond the 10 mm search radius)
    inside a hotter organ (SUV 10): the shell's median is above the spot's SUVmax."""
    radius = _radius()
    pet = np.where(radius < 12, 0.5, 10.0).astype(np.float32)
    pet[radius < 2] = 3.0
    with pytest.raises(ThresholdError, match="no contrast"):
        threshold_region(Volume.from_array(pet, np.eye(4)), _ras(CENTRE), method="background")


def test_the_command_line_takes_the_method(tiny_package_dir, images, tmp_path):
    import json
    import subprocess
    import sys

    from InteractiveRefineLib.geometry import read_volume, write_volume

    ct, pet = images
    write_volume(ct, tmp_path / "ct.nii.gz")
    write_volume(pet, tmp_path / "pet.nii.gz")
    centre = ",".join(str(v) for v in _ras(CENTRE))
    command = [sys.executable, "-m", "InteractiveRefineLib.cli", "segment",
               "--ct", str(tmp_path / "ct.nii.gz"),
               "--pet", str(tmp_path / "pet.nii.gz"), "--model", str(tiny_package_dir), "--device", "cpu",
               "--roi-center", "32,32,32", "--click", f"t+{centre}", "--threshold-percent", "50",
               "--out", str(tmp_path / "mask.nii.gz")]
    completed = subprocess.run(command + ["--threshold-method", "background"], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr
    region = json.loads(completed.stdout.strip().splitlines()[-1])["threshold_regions"][0]
    assert region["method"] == "background" and region["background_suv"] == pytest.approx(BACKGROUND)
    assert region["fraction"] == 0.5 and region["threshold_suv"] == pytest.approx(5.0)
    mask = read_volume(tmp_path / "mask.nii.gz").array > 0
    assert (mask == (_radius() <= 10.0 + 1e-6)).mean() > 0.999
    refused = subprocess.run(command + ["--threshold-method", "gradient"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and "invalid choice: 'gradient'" in refused.stderr
    assert "fixed" in refused.stderr and "background" in refused.stderr
