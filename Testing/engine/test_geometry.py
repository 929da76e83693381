"""Geometry on real PET/CT: RAS at the edges, physical-space resampling, exact back-mapping."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from InteractiveRefineLib import geometry
from InteractiveRefineLib.errors import ImageError
from InteractiveRefineLib.geometry import Volume, read_volume, write_volume

from conftest import data_path

STS = ("sts_petct", "hecktor_layout", "STS_001")


def _sts(name):
    return read_volume(data_path(*STS, f"STS_001{name}.nii.gz"))


def test_ras_matches_nibabel_affine_on_real_file():
    """nibabel reports the RAS affine directly: an independent check of our LPS->RAS edge."""
    nib = pytest.importorskip("nibabel")
    path = data_path(*STS, "STS_001__PT.nii.gz")
    np.testing.assert_allclose(read_volume(path).ijk_to_ras, nib.load(str(path)).affine, atol=1e-3)


def test_pet_resampled_to_ct_keeps_hot_voxel_in_place():
    ct, pet = _sts("__CT"), _sts("__PT")
    assert pet.grid.spacing[0] == pytest.approx(4.6875)  # PET really is on its own grid
    hot = np.zeros_like(pet.array)
    index_kji = (30, 20, 22)
    hot[index_kji] = 100.0
    hot_ras = pet.grid.index_to_ras(np.array(index_kji[::-1], float))
    on_ct = geometry.resample(hot, pet.grid, ct.grid, order=1)
    peak_kji = np.unravel_index(np.argmax(on_ct), on_ct.shape)
    peak_ras = ct.grid.index_to_ras(np.array(peak_kji[::-1], float))
    # The peak lands on the CT voxel nearest to the hot PET voxel's centre.
    assert np.all(np.abs(peak_ras - hot_ras) <= ct.grid.spacing / 2 + 1e-6)


def test_real_pet_uptake_stays_on_the_tumour_after_resampling():
    ct, pet, label = _sts("__CT"), _sts("__PT"), _sts("")
    on_ct = geometry.resample(pet.array, pet.grid, ct.grid, order=1)
    tumour = label.array > 0
    assert on_ct[tumour].mean() > 3 * on_ct[~tumour & (ct.array > -300)].mean()


def test_roi_crop_and_back_mapping_is_exact():
    ct = _sts("__CT")
    center = ct.grid.center_ras() + np.array([5.0, -7.0, 3.0])
    roi = geometry.working_grid(ct.grid, center, (48, 48, 48), (1.0, 1.0, 1.0))
    ball_center, radius = center + np.array([3.0, 2.0, -4.0]), 12.0

    def ball(grid):
        k, j, i = np.indices(grid.shape)
        ras = grid.index_to_ras(np.stack([i, j, k], -1).astype(float))
        return np.linalg.norm(ras - ball_center, axis=-1)

    in_roi = (ball(roi) <= radius).astype(np.float32)
    box = geometry.bounding_box_in(ct.grid, roi)
    back = geometry.resample(in_roi, roi, geometry.sub_grid(ct.grid, box), order=1) > 0.5
    distance = ball(geometry.sub_grid(ct.grid, box))
    # Every CT voxel centre clearly inside (or outside) the ball keeps its RAS membership.
    assert back[distance <= radius - 1.0].all()
    assert not back[distance >= radius + 1.0].any()
    # The sub-box starts exactly where the ROI does in RAS (no half-voxel offset).
    start = geometry.sub_grid(ct.grid, box).index_to_ras(np.zeros(3))
    assert np.allclose(start, ct.grid.index_to_ras(np.array([box[2].start, box[1].start, box[0].start])))


def _oblique_volume(tmp_path):
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([0.8, 1.3, 3.5])
    matrix[:3, 3] = [-40.0, 25.0, -100.0]
    array = np.random.default_rng(0).normal(size=(12, 30, 40)).astype(np.float32)
    path = tmp_path / "oblique.nrrd"
    write_volume(Volume.from_array(array, matrix), path)
    return path, matrix


def test_click_at_known_ras_lands_in_the_right_voxel_oblique_anisotropic(tmp_path):
    path, matrix = _oblique_volume(tmp_path)
    volume = read_volume(path)
    np.testing.assert_allclose(volume.ijk_to_ras, matrix, atol=1e-5)
    ijk = np.array([17, 9, 5])
    ras = matrix[:3, :3] @ ijk + matrix[:3, 3] + np.array([0.2, -0.1, 0.4])  # inside that voxel
    # SimpleITK, working in LPS, is the independent oracle.
    image = sitk.ReadImage(str(path))
    lps = (-ras[0], -ras[1], ras[2])
    assert tuple(image.TransformPhysicalPointToIndex(lps)) == tuple(ijk)
    assert tuple(np.rint(volume.grid.ras_to_index(ras)).astype(int)) == tuple(ijk)


def test_write_read_roundtrip_keeps_geometry(tmp_path):
    path, matrix = _oblique_volume(tmp_path)
    volume = read_volume(path)
    write_volume(volume, tmp_path / "copy.nii.gz")
    np.testing.assert_allclose(read_volume(tmp_path / "copy.nii.gz").ijk_to_ras, matrix, atol=1e-4)


def test_dicom_series_reads_with_same_geometry_as_nifti():
    ct_dicom = read_volume(data_path("sts_petct", "dicom_cropped", "STS_001", "CT", "image"))
    ct = _sts("__CT")
    assert ct_dicom.shape == ct.shape
    np.testing.assert_allclose(ct_dicom.ijk_to_ras, ct.ijk_to_ras, atol=0.05)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageError, match="not found: .*nothing.nii.gz"):
        read_volume(tmp_path / "nothing.nii.gz")


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.nii.gz"):
        read_volume(bad)


def test_nifti_without_simpleitk_reads_the_same_geometry(monkeypatch, tmp_path):
    """Where SimpleITK is absent (e.g. a bare GPU box), nibabel reads and writes NIfTI."""
    pytest.importorskip("nibabel")
    path = data_path(*STS, "STS_001__PT.nii.gz")
    with_sitk = read_volume(path)
    monkeypatch.setitem(__import__("sys").modules, "SimpleITK", None)
    without = read_volume(path)
    np.testing.assert_allclose(without.ijk_to_ras, with_sitk.ijk_to_ras, atol=1e-4)
    assert np.array_equal(without.array, with_sitk.array)
    write_volume(without, tmp_path / "copy.nii.gz")
    copied = read_volume(tmp_path / "copy.nii.gz")
    np.testing.assert_allclose(copied.ijk_to_ras, with_sitk.ijk_to_ras, atol=1e-4)


@pytest.mark.parametrize("spacing, origin, shape", [
    ((0.977, 0.977, 2.0), (-1.2, -0.8, -0.5), (72, 147, 147)),  # a CT box under a 1 mm working grid
    ((0.41, 1.7, 0.33), (-3.2, 5.1, -40.0), (200, 50, 250)),  # finer and coarser, partly outside
    ((2.0, 2.0, 2.0), (0.5, 0.5, 0.5), (40, 40, 40)),
    ((1.0, 1.0, 2.0), (-3.0, 4.0, 1.5), (90, 70, 50)),  # whole-voxel steps along i and j: copies
])
def test_probability_resampling_along_parallel_axes_equals_scipy(spacing, origin, shape):
    """The back-mapping's one-axis-at-a-time re-sampling gives scipy's float32 values on float16
    probabilities, including exact 0.5 ties and voxels beyond the source (0)."""
    rng = np.random.default_rng(0)
    from scipy import ndimage

    source = geometry.Grid((80, 80, 80), np.diag([1.0, 1.0, 1.0, 1.0]))
    matrix = np.diag(list(spacing) + [1.0])
    matrix[:3, 3] = origin
    target = geometry.Grid(shape, matrix)
    noise = ndimage.gaussian_filter(rng.standard_normal((80, 80, 80)), 2)
    probability = (0.5 + 0.05 * noise).astype(np.float16)
    probability[:, :20] = 0.5
    fast = geometry.resample_probability(probability, source, target)
    reference = geometry.resample(probability, source, target, order=1)
    assert fast.dtype == np.float32 and fast.shape == tuple(shape)
    assert np.array_equal(fast, reference)
    assert (reference == 0.5).sum() > 1000


def test_probability_resampling_of_oblique_grids_is_scipys():
    source = geometry.Grid((30, 30, 30), np.diag([1.0, 1.0, 1.0, 1.0]))
    angle = 0.3
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    target = geometry.Grid((20, 25, 25), matrix)
    probability = np.random.default_rng(1).random((30, 30, 30)).astype(np.float16)
    assert np.array_equal(geometry.resample_probability(probability, source, target),
                          geometry.resample(probability, source, target, order=1))
