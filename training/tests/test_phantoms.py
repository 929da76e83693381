"""Synthetic head-and-neck PET/CT phantoms: determinism, labels, realism ranges, files, speed."""
from __future__ import annotations

import functools
import json
import time

import numpy as np
import pytest
from interactive_refine_training import phantoms
from InteractiveRefineLib.cases import find_cases
from InteractiveRefineLib.geometry import read_volume
from scipy import ndimage

SMALL = (48, 48, 48)
SEEDS = range(6)


@functools.lru_cache(maxsize=None)
def _case(seed: int, shape=SMALL, pet_spacing=None) -> phantoms.PhantomCase:
    return phantoms.generate_case(seed, shape=shape, pet_spacing_mm=pet_spacing)


@functools.lru_cache(maxsize=None)
def _stats(seed: int) -> dict:
    return phantoms.case_statistics(_case(seed))


def _same(a: phantoms.PhantomCase, b: phantoms.PhantomCase) -> bool:
    return all(np.array_equal(getattr(a, n).array, getattr(b, n).array) for n in ("ct", "pet", "label"))


def test_reproducible_by_seed_and_different_across_seeds():
    a = phantoms.generate_case(7, shape=SMALL)
    b = phantoms.generate_case(7, shape=SMALL)
    assert _same(a, b)  # bit-identical
    assert a.meta == b.meta
    c = _case(0)
    assert not np.array_equal(a.ct.array, c.ct.array)
    assert not np.array_equal(a.pet.array, c.pet.array)
    assert not np.array_equal(a.label.array, c.label.array)


def test_volumes_labels_and_meta():
    case = _case(1)
    assert case.ct.shape == case.pet.shape == case.label.shape == SMALL
    assert np.allclose(case.ct.ijk_to_ras, case.label.ijk_to_ras)
    assert np.allclose(case.ct.ijk_to_ras, case.pet.ijk_to_ras)
    assert np.allclose(case.ct.grid.spacing, 1.0)
    assert case.label.array.dtype == np.uint8
    for seed in SEEDS:
        lab = _case(seed).label.array
        assert set(np.unique(lab)) <= {0, 1, 2}
        assert (lab == 1).any(), f"seed {seed}: no GTVp"
    assert any((_case(s).label.array == 2).any() for s in SEEDS), "no GTVn in any case"
    pet = case.pet.array
    assert pet.dtype == np.float32 and pet.min() >= 0.0 and np.isfinite(pet).all()
    assert case.ct.array.min() >= -1024 and case.ct.array.max() <= 3071
    meta = case.meta
    assert meta["seed"] == 1 and meta["generator_version"] == phantoms.GENERATOR_VERSION == "1.3"
    assert meta["tumour_ml"] == pytest.approx((case.label.array == 1).sum() * 1e-3, abs=1e-3)
    assert meta["suvmax"] == pytest.approx(float(pet[case.label.array == 1].max()), rel=1e-4)


def test_tumour_volume_and_suvmax_in_documented_ranges():
    lo_ml, hi_ml = phantoms.TUMOUR_ML_RANGE
    lo_suv, hi_suv = phantoms.SUVMAX_RANGE
    for seed in SEEDS:
        meta = _case(seed).meta
        assert 0.95 * lo_ml <= meta["tumour_ml"] <= hi_ml, meta["tumour_ml"]
        # the target is in [3, 25]; signal-dependent noise may push the measured maximum a little
        assert 0.8 * lo_suv <= meta["suvmax"] <= 1.2 * hi_suv, meta["suvmax"]
        assert meta["suvmean"] < meta["suvmax"]
    # a near-full-scale FOV (128 x 128 x 120 mm, anisotropic voxels) reaches large tumours
    volumes = []
    for seed in range(6):
        meta = phantoms.generate_case(seed, shape=(40, 64, 64), spacing_mm=(2.0, 2.0, 3.0)).meta
        assert meta["anatomy_scale"] == pytest.approx(64 / 66, abs=1e-3)
        assert 0.95 * lo_ml <= meta["tumour_ml"] <= hi_ml
        volumes.append(meta["tumour_ml"])
    assert max(volumes) > 15.0, volumes


def test_tumour_is_hot_on_pet_but_not_on_ct():
    for seed in SEEDS:
        case, stats = _case(seed), _stats(seed)
        pet, lab = case.pet.array, case.label.array
        tumour = lab == 1
        # the label sits on the hot region: clearly hotter than a 3-8 voxel shell around it
        shell = ndimage.binary_dilation(tumour, iterations=8) & ~ndimage.binary_dilation(tumour, iterations=3)
        assert pet[tumour].mean() > 1.5 * pet[shell & (lab == 0)].mean(), seed
        # CT contrast is low: tumour HU overlap soft tissue
        assert abs(stats["tumour_hu_p50"] - stats["soft_hu_p50"]) < 30, seed
        assert 20 <= stats["tumour_hu_p50"] <= 70 and stats["tumour_hu_p5"] > -30, seed


def test_anatomy_statistics_are_head_and_neck_like():
    fat = [_stats(s)["fat_fraction"] for s in SEEDS]
    bone = [_stats(s)["bone_fraction"] for s in SEEDS]
    bg = [_stats(s)["out_suv_p50"] for s in SEEDS]
    assert 0.1 <= np.median(fat) <= 0.32
    assert 0.03 <= np.median(bone) <= 0.15
    assert 0.8 <= np.median(bg) <= 1.8
    case = _case(0)
    assert (case.ct.array < -900).any() and (case.ct.array > 300).any()  # air and bone


def test_hot_non_tumour_regions_exist_in_a_good_share():
    hot = [_stats(s)["hot_largest_ml"] >= 0.5 for s in SEEDS]
    assert sum(hot) >= 2, hot
    assert any(_case(s).meta["brain"] for s in SEEDS)


def test_pet_on_its_own_coarser_grid():
    case = _case(2, pet_spacing=4.0)
    assert np.allclose(case.pet.grid.spacing, 4.0)
    assert case.pet.shape == (12, 12, 12)
    assert case.label.shape == case.ct.shape == SMALL
    assert np.allclose(case.pet.grid.center_ras(), case.ct.grid.center_ras(), atol=1e-6)
    assert case.meta["pet_spacing_mm"] == [4.0, 4.0, 4.0]
    # same anatomy and label as on the CT grid, only the PET differs
    fine = _case(2)
    assert np.array_equal(case.label.array, fine.label.array)
    assert case.pet.array.min() >= 0 and case.meta["suvmax"] > 2.0


def test_bulky_tumours_have_a_hot_rim_a_colder_core_and_stay_inside_the_fov():
    """p_bulky draws large sarcoma-like masses (the measured STS_001: 365 mL, SUVmax 7.9, mean 2.6)."""
    lo_ml, hi_ml = phantoms.BULKY_ML_RANGE
    lo_suv, hi_suv = phantoms.BULKY_SUVMAX_RANGE
    for seed in range(3):
        case = phantoms.generate_case(seed, shape=(72, 72, 72), spacing_mm=(2.0, 2.0, 2.0), p_bulky=1.0)
        meta, tumour = case.meta, case.label.array == 1
        assert meta["bulky"] and meta["necrotic_core"], meta
        assert 0.95 * lo_ml <= meta["tumour_ml"] <= hi_ml, meta["tumour_ml"]
        assert 0.8 * lo_suv <= meta["suvmax"] <= 1.2 * hi_suv, meta["suvmax"]
        assert len(np.unique(ndimage.label(tumour)[0])) == 2  # one connected mass
        # never cut by the edge of the field of view
        assert not (tumour[[0, -1]].any() or tumour[:, [0, -1]].any() or tumour[:, :, [0, -1]].any())
        # heterogeneous: the outer 6 mm are hotter than the deep core, and than the tissue around
        depth = ndimage.distance_transform_edt(tumour, sampling=2.0)
        pet = case.pet.array
        rim, core = tumour & (depth <= 6.0), depth > 0.7 * depth.max()
        shell = ndimage.binary_dilation(tumour, iterations=4) & ~tumour & (case.ct.array > -300)
        assert pet[rim].mean() > 1.3 * pet[core].mean(), seed
        assert pet[rim].mean() > pet[shell].mean(), seed
        # still CT-isodense with soft tissue
        assert 10 <= float(np.median(case.ct.array[tumour])) <= 70, seed
    # the default draws no bulky tumour; a share of them when asked
    assert not any(_case(s).meta["bulky"] for s in SEEDS)
    shares = [phantoms.generate_case(s, shape=SMALL, p_bulky=0.5).meta["bulky"] for s in range(10)]
    assert 2 <= sum(shares) <= 8, shares
    with pytest.raises(ValueError, match="p_bulky must be a probability"):
        phantoms.generate_case(0, shape=SMALL, p_bulky=1.5)


def test_a_bad_bulky_share_is_refused_before_anything_is_written(tmp_path, capsys):
    from interactive_refine_training.cli import main

    assert main(["phantoms", "--out", str(tmp_path / "ph"), "--n", "2", "--p-bulky", "-0.2"]) == 2
    assert "p_bulky must be a probability in [0, 1], got -0.2" in capsys.readouterr().err
    assert not (tmp_path / "ph").exists()


def test_write_case_hecktor_2022_layout_round_trip(tmp_path):
    case = _case(4)
    folder = phantoms.write_case(case, tmp_path, "PH-004")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["PH-004.nii.gz", "PH-004__CT.nii.gz", "PH-004__PT.nii.gz"]
    for name, vol in (("PH-004__CT", case.ct), ("PH-004__PT", case.pet), ("PH-004", case.label)):
        back = read_volume(folder / f"{name}.nii.gz")
        assert back.shape == vol.shape
        assert np.allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-5)
        assert np.allclose(back.array, vol.array, atol=1e-6)
    found = find_cases(tmp_path)
    assert [c.case_id for c in found] == ["PH-004"]
    assert found[0].pet is not None and found[0].label is not None


def test_generate_dataset_is_reproducible_and_documented(tmp_path):
    ids = phantoms.generate_dataset(tmp_path / "a", 2, seed=10, shape=(32, 32, 32), prefix="PH")
    assert ids == ["PH-000", "PH-001"]
    assert [c.case_id for c in find_cases(tmp_path / "a")] == ids
    record = json.loads((tmp_path / "a" / "phantoms.json").read_text())
    assert record["generator_version"] == phantoms.GENERATOR_VERSION
    assert record["parameters"]["shape"] == [32, 32, 32]
    assert [c["seed"] for c in record["cases"]] == [10, 11] and record["cases"][1]["id"] == "PH-001"
    # case i uses seed + i, also when generated in worker processes
    again = phantoms.generate_case(11, shape=(32, 32, 32))
    back = read_volume(tmp_path / "a" / "PH-001" / "PH-001__PT.nii.gz")
    assert np.array_equal(back.array, again.pet.array)
    phantoms.generate_dataset(tmp_path / "b", 2, seed=10, shape=(32, 32, 32), prefix="PH", workers=2)
    for cid in ids:
        for suffix in ("__CT", "__PT", ""):
            a = read_volume(tmp_path / "a" / cid / f"{cid}{suffix}.nii.gz").array
            b = read_volume(tmp_path / "b" / cid / f"{cid}{suffix}.nii.gz").array
            assert np.array_equal(a, b)


def test_generation_is_fast():
    phantoms.generate_case(0, shape=SMALL)  # warm-up
    best = min(_timed(lambda: phantoms.generate_case(1, shape=SMALL)) for _ in range(2))
    assert best < 0.5, f"48^3 phantom took {best:.2f} s"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---- what the model sees: the 144 mm field centred on the GTVp (72^3 at 2 mm, PET on a 4 mm grid)
FIELD_SEEDS = range(8)


@functools.lru_cache(maxsize=None)
def _field(seed: int, p_brain: float = phantoms.P_BRAIN) -> dict:
    case = phantoms.generate_case(seed, shape=(72, 72, 72), spacing_mm=(2.0, 2.0, 2.0), pet_spacing_mm=4.0,
                                  p_brain=p_brain)
    return {**phantoms.field_statistics(case.ct, case.pet, case.label), "meta_brain": case.meta["brain"]}


def test_most_fields_hold_a_hot_brain_above_the_tumour_like_the_real_scans():
    """4 of the 5 real H&N fields show brain 3-33 mm above the tumour centre, SUV p50 5-9, ~17x the GTVp."""
    fields = [_field(s) for s in FIELD_SEEDS]
    with_brain = [f for f in fields if f["brain"]]
    assert len(with_brain) >= 5, [f["brain"] for f in fields]
    for f in with_brain:
        assert f["meta_brain"]
        assert 5.0 <= f["brain_dz_mm"] <= 45.0, f["brain_dz_mm"]  # above the tumour, not far
        assert 4.5 <= f["brain_suv_p50"] <= 10.0, f["brain_suv_p50"]
        assert f["brain_suv_p50"] > 3.0 * f["bg_suv"]  # clearly hotter than the background
        assert 50.0 <= f["brain_ml"] <= 320.0, f["brain_ml"]
    assert 8.0 <= np.median([f["brain_x_tumour"] for f in with_brain]) <= 40.0
    # p_brain=0: no brain-sized hot region at the top of any field
    assert all(_field(s, 0.0)["brain_ml"] < 10.0 for s in FIELD_SEEDS)


def test_hot_glands_come_in_left_right_pairs_milder_than_the_tumour():
    fields = [_field(s) for s in FIELD_SEEDS]
    paired = [f for f in fields if f["sym_pairs"] >= 1]
    assert len(paired) >= len(fields) // 2, [f["sym_pairs"] for f in fields]
    for f in paired:
        assert 2.5 <= f["gland_suvmax"] <= 8.0, f["gland_suvmax"]
        assert 0.3 <= f["gland_ml"] <= 8.0, f["gland_ml"]
    assert sum(f["gland_suvmax"] < f["suvmax"] for f in paired) >= len(paired) - 1


def test_field_background_noise_and_tumour_uptake_match_the_real_scans():
    """Real H&N fields: body SUV p50 1.17-1.45, local PET CoV 0.10-0.14, GTVp SUVmax 9-22, body 60-82 %."""
    fields = [_field(s) for s in FIELD_SEEDS]
    assert 1.1 <= np.median([f["bg_suv"] for f in fields]) <= 1.5
    assert 0.08 <= np.median([f["pet_cov"] for f in fields]) <= 0.16
    assert 9.0 <= np.median([f["suvmax"] for f in fields]) <= 22.0
    assert 0.6 <= np.median([f["body_fraction"] for f in fields]) <= 0.85
    assert -85 <= np.median([f["fat_hu"] for f in fields]) <= -60
    assert 30 <= np.median([f["tumour_hu"] for f in fields]) <= 60


def test_nodes_are_separate_and_sized_like_real_gtvn():
    """Generator 1.3's GTVn (label 2, full anatomical scale: a 144 mm field): 0-3 separate nodes
    of 0.6-40 mL (less where the neck clips one), median ~5 mL like the HNTS-MRG 2024 pre-treatment
    contours (training/README.md, "Lymph nodes"), most cases with one, hotter than the background."""
    rows, metas = [], []
    for seed in range(12):
        case = phantoms.generate_case(seed, shape=(96, 96, 96), spacing_mm=(1.5, 1.5, 1.5))
        assert case.meta["anatomy_scale"] == pytest.approx(1.0)
        rows.append(phantoms.node_statistics(case.label, case.pet))
        metas.append(case.meta)
    assert sum(r["n_nodes"] > 0 for r in rows) >= 8
    assert all(r["n_nodes"] == m["n_nodes"] <= 3 for r, m in zip(rows, metas))  # none touch
    sizes = [v for r in rows for v in r["node_ml"]]
    lo, hi = phantoms.NODE_ML_RANGE
    assert 0.4 * lo <= min(sizes) and max(sizes) <= 1.1 * hi
    assert 2.0 <= np.median(sizes) <= 12.0
    suv = [v for r in rows for v in r["node_suvmax"]]
    assert np.median(suv) > 3.0 and min(suv) > 1.5
