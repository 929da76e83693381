"""The one-click PET threshold region: known regions on phantom lesions, as a click in the
session's history (undo, reset, confirm, the next refinement), its refusals, and the baseline
that every evaluation reports beside the model."""
from __future__ import annotations

import numpy as np
import pytest
from InteractiveRefineLib.errors import ClickError, ThresholdError
from InteractiveRefineLib.geometry import Volume
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.threshold import innermost_point, threshold_region

SHAPE = (64, 64, 64)  # 1 mm voxels
LESIONS = {"a": ((32, 32, 22), 10.0), "b": ((32, 32, 44), 6.0)}  # centre (k, j, i), core SUV


def _radius(centre):
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")
    return np.sqrt((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2)


@pytest.fixture(scope="module")
def images():
    """Background SUV 1; each lesion a core of radius 4 mm at its SUV and a shell to 7 mm at 45 %
    of it: its 40 % region is the 7 mm ball, its 50 % region the 4 mm core."""
    pet = np.ones(SHAPE, np.float32)
    for centre, suv in LESIONS.values():
        r = _radius(centre)
        pet[r < 7] = 0.45 * suv
        pet[r < 4] = suv
    ct = np.where(pet > 1, 40.0, 20.0)
    ct[_radius((32, 32, 32)) > 30] = -1000.0  # air around the body
    ct = ct.astype(np.float32)
    return Volume.from_array(ct, np.eye(4)), Volume.from_array(pet, np.eye(4))


def _ras(kji):
    return np.array(kji[::-1], dtype=float)  # identity geometry: RAS = (i, j, k)


@pytest.mark.parametrize("fraction, radius", [(0.4, 7), (0.5, 4)])
def test_a_lesion_of_known_uptake_gives_its_known_region(images, fraction, radius):
    _, pet = images
    centre, suv = LESIONS["a"]
    region = threshold_region(pet, _ras(centre) + [0, 3.0, 0], fraction)  # a click 3 mm off-centre
    assert region.suvmax == pytest.approx(suv) and region.threshold == pytest.approx(fraction * suv)
    assert np.array_equal(region.mask, _radius(centre) < radius)
    assert region.volume_ml == pytest.approx(region.mask.sum() / 1000.0)


def test_two_lesions_give_two_regions_from_two_clicks(images):
    _, pet = images
    a = threshold_region(pet, _ras(LESIONS["a"][0]))
    b = threshold_region(pet, _ras(LESIONS["b"][0]))
    assert a.suvmax == pytest.approx(10.0) and b.suvmax == pytest.approx(6.0)
    assert a.mask.any() and b.mask.any() and not (a.mask & b.mask).any()
    assert np.array_equal(a.mask, _radius(LESIONS["a"][0]) < 7)
    assert np.array_equal(b.mask, _radius(LESIONS["b"][0]) < 7)


@pytest.fixture()
def session(tiny_package, images):
    session = RefinementSession(tiny_package, device="cpu", refine_mode="full")
    session.set_image(*images, roi_center_ras=_ras((32, 32, 32)))
    session.initial()
    return session


def test_a_threshold_click_lives_in_the_history(session, images):
    initial = session.mask_on_ct().copy()
    result = session.add_threshold(_ras(LESIONS["a"][0]), 0.4)
    assert result.mode == "threshold" and result.exact and result.n_clicks == 1
    assert result.details["threshold"]["suvmax"] == pytest.approx(10.0)
    mask = session.mask_on_ct().astype(bool)
    ball = _radius(LESIONS["a"][0]) < 7
    assert (mask == ball).mean() > 0.999 and abs(int(mask.sum()) - int(ball.sum())) < 0.05 * ball.sum()
    after_threshold = session.mask_on_ct().copy()
    # The next click refines from the region: it is the refine input's previous probability.
    previous = session.refine_input()[0, session.card.stages["refine"].channel("previous_probability")]
    assert np.array_equal(previous.numpy(), session.probability)
    session.add_click(_ras(LESIONS["b"][0]), True)
    assert session.clicks[0].kind == "threshold" and session.clicks[1].kind == "point"
    session.undo()
    assert np.array_equal(session.mask_on_ct(), after_threshold)  # exact
    session.undo()
    assert np.array_equal(session.mask_on_ct(), initial)
    session.add_threshold(_ras(LESIONS["a"][0]), 0.5)
    assert int(session.mask_on_ct().sum()) < int(after_threshold.sum())  # the 4 mm core
    session.reset()
    assert np.array_equal(session.mask_on_ct(), initial) and session.step == 0
    assert session.add_threshold(_ras(LESIONS["a"][0]), 0.4).exact and not session.needs_confirm


def test_a_confirm_replays_a_threshold_click(tiny_package, images):
    """In a reduced-precision session the clicks after a threshold click are previews; confirm()
    recomputes them and keeps the threshold state as it was."""
    session = RefinementSession(tiny_package, device="cpu", refine_mode="full", amp=True)
    reference = RefinementSession(tiny_package, device="cpu", refine_mode="full", amp=False)
    for s in (session, reference):
        s.set_image(*images, roi_center_ras=_ras((32, 32, 32)))
        s.initial()
        s.add_threshold(_ras(LESIONS["a"][0]))
        s.add_click(_ras(LESIONS["b"][0]), True)
    session.confirm()
    assert [c.kind for c in session.clicks] == ["threshold", "point"]
    assert np.array_equal(session.mask_on_ct(), reference.mask_on_ct())


def _unchanged(session, before, steps):
    assert session.step == steps and np.array_equal(session.mask_on_ct(), before)


def test_refusals_change_nothing(session, images, tiny_package):
    session.add_click(_ras(LESIONS["b"][0]), True)
    before = session.mask_on_ct().copy()
    with pytest.raises(ThresholdError, match="below the minimum of 2"):
        session.add_threshold(_ras((32, 12, 32)))  # background: SUV 1
    _unchanged(session, before, 1)
    with pytest.raises(ThresholdError, match="between 0 and 1"):
        session.add_threshold(_ras(LESIONS["a"][0]), 40)
    _unchanged(session, before, 1)
    with pytest.raises(ClickError, match="outside"):
        session.add_threshold(_ras((32, 32, 200)))
    _unchanged(session, before, 1)
    ct, pet = images
    counts = Volume.from_array(pet.array * 5000.0, pet.ijk_to_ras)  # Bq/mL-like, not SUV
    other = RefinementSession(tiny_package, device="cpu")
    other.set_image(ct, counts, roi_center_ras=_ras((32, 32, 32)))
    other.initial()
    initial = other.mask_on_ct().copy()
    with pytest.raises(ThresholdError, match="median inside the body is 5e"):
        other.add_threshold(_ras(LESIONS["a"][0]))
    _unchanged(other, initial, 0)
    assert other.add_threshold(_ras(LESIONS["a"][0]), pet_is_suv=True).mode == "threshold"  # confirmed


def test_threshold_start_makes_the_first_positive_click_the_region(tiny_package, images):
    session = RefinementSession(tiny_package, device="cpu", refine_mode="full", threshold_start=True)
    session.set_image(*images, roi_center_ras=_ras((32, 32, 32)))
    session.initial()
    session.add_click(_ras((32, 12, 32)), False)  # a negative click first: refined as usual
    assert session.add_click(_ras((32, 10, 34)), True).mode == "full"  # no uptake: refined as usual
    session.reset()
    assert session.add_click(_ras(LESIONS["a"][0]), True).mode == "threshold"
    assert session.add_click(_ras(LESIONS["b"][0]), True).mode == "full"  # only the first one


def test_innermost_point_is_the_deepest_label_voxel():
    label = np.zeros((20, 20, 20), bool)
    label[2:18, 5:15, 8:12] = True
    grid = Volume.from_array(label.astype(np.float32), np.eye(4)).grid
    i, j, k = innermost_point(label, grid)
    assert 8 <= i <= 11 and 5 <= j <= 14 and 2 <= k <= 17
    assert min(i - 8, 11 - i) >= 1 and innermost_point(np.zeros_like(label), grid) is None


def test_every_simulation_reports_the_one_click_floor_on_the_real_case():
    """CHGJ015 with the shipped model: the 40 % and 50 % regions from the innermost click, as
    measured with nibabel + scipy (0.842, 0.826), beside the model after that same click."""
    from InteractiveRefineLib.geometry import read_volume
    from InteractiveRefineLib.simulation import label_centroid_ras, run_simulation

    from conftest import data_path

    folder = data_path("hecktor2020_chgj015")
    ct, pet, label = (read_volume(folder / f"CHGJ015_{s}.nii.gz") for s in ("ct", "pt", "ct_gtvt"))
    baselines = {}
    for start in (False, True):
        session = RefinementSession(device="cpu", threshold_start=start)
        session.set_image(ct, pet, roi_center_ras=label_centroid_ras(label))
        out = run_simulation(session, label, 1, seed=0, surface_metrics=False)
        base = baselines[start] = out["baseline"]
        assert base["threshold"]["0.4"]["dice"] == pytest.approx(0.842, abs=0.005)
        assert base["threshold"]["0.5"]["dice"] == pytest.approx(0.826, abs=0.005)
        assert base["threshold"]["0.4"]["suvmax"] == pytest.approx(14.18, abs=0.01)
        assert base["threshold_click"] > 0.8
        assert out["dice"][0] == pytest.approx(0.673, abs=0.001)  # the loop starts from the initial state
    # the shipped card refines the first click; with the threshold start, the click is that region
    assert abs(baselines[False]["model_one_click"] - baselines[False]["threshold_click"]) > 0.05
    assert baselines[True]["model_one_click"] == pytest.approx(baselines[True]["threshold_click"], abs=0.005)


def test_the_command_line_takes_threshold_clicks(tiny_package_dir, images, tmp_path):
    import json
    import subprocess
    import sys

    from InteractiveRefineLib.cli import parse_any_click
    from InteractiveRefineLib.geometry import read_volume, write_volume

    assert parse_any_click("t+-1,2.5,3") == ((-1.0, 2.5, 3.0), True, "threshold")
    assert parse_any_click("-1,2,3") == ((1.0, 2.0, 3.0), False, "point")
    ct, pet = images
    write_volume(ct, tmp_path / "ct.nii.gz")
    write_volume(pet, tmp_path / "pet.nii.gz")
    centre = ",".join(str(v) for v in _ras(LESIONS["a"][0]))
    completed = subprocess.run(
        [sys.executable, "-m", "InteractiveRefineLib.cli", "segment", "--ct", str(tmp_path / "ct.nii.gz"),
         "--pet", str(tmp_path / "pet.nii.gz"), "--model", str(tiny_package_dir), "--device", "cpu",
         "--roi-center", "32,32,32", "--click", f"t+{centre}", "--threshold-percent", "50",
         "--out", str(tmp_path / "mask.nii.gz")],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["threshold_regions"][0]["fraction"] == 0.5
    mask = read_volume(tmp_path / "mask.nii.gz").array > 0
    core = _radius(LESIONS["a"][0]) < 4
    assert (mask == core).mean() > 0.999


def test_a_card_trained_from_threshold_starts_makes_it_the_sessions_default(tiny_package_dir, images,
                                                                           tmp_path):
    """``threshold_start: true`` in the card: a session's first positive click is a threshold click
    unless its user says False; a card value that is not true/false is refused, naming the field."""
    import json
    import shutil

    from InteractiveRefineLib.errors import ModelPackageError
    from InteractiveRefineLib.model_package import load_model_package

    folder = shutil.copytree(tiny_package_dir, tmp_path / "from_threshold")
    card = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**card, "threshold_start": True}))
    package = load_model_package(folder)
    assert package.spec.threshold_start
    modes = {}
    for asked in (None, False):
        session = RefinementSession(package, device="cpu", refine_mode="full", threshold_start=asked)
        session.set_image(*images, roi_center_ras=_ras((32, 32, 32)))
        session.initial()
        modes[asked] = session.add_click(_ras(LESIONS["a"][0]), True).mode
    assert modes == {None: "threshold", False: "full"}
    assert not RefinementSession(tiny_package_dir, device="cpu").threshold_start  # older cards: off
    (folder / "model.json").write_text(json.dumps({**card, "threshold_start": "yes"}))
    with pytest.raises(ModelPackageError, match="threshold_start"):
        load_model_package(folder)
