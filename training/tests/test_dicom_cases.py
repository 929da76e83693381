"""A training case given as DICOM: CT series folder, PET DICOM folder (SUVbw) and a DICOM SEG label."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from interactive_refine_training.config import preprocessing_settings
from interactive_refine_training.data import preprocess_case
from InteractiveRefineLib.cases import Case
from training_helpers import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from conftest import data_path  # noqa: E402


def test_a_dicom_case_preprocesses_like_its_nifti_copy(tmp_path):
    from InteractiveRefineLib.dicom_export import write_seg
    from InteractiveRefineLib.dicom_series import read_series
    from InteractiveRefineLib.geometry import read_volume

    ct_folder = data_path("sts_petct", "dicom_cropped", "STS_001", "CT", "image")
    nifti = data_path("sts_petct", "hecktor_layout", "STS_001")
    series = read_series(ct_folder, "CT")
    label = (read_volume(nifti / "STS_001.nii.gz").array > 0.5).astype(np.uint8)
    write_seg(label, series.volume.grid, series.datasets, tmp_path / "seg.dcm")
    settings = preprocessing_settings(tiny_config())
    pet = data_path("sts_petct", "dicom_raw_pet", "STS_001", "FDG_PET", "image")
    dicom = preprocess_case(Case("STS_001", ct_folder, pet, tmp_path / "seg.dcm"), settings)
    files = preprocess_case(Case("STS_001", nifti / "STS_001__CT.nii.gz", nifti / "STS_001__PT.nii.gz",
                                 nifti / "STS_001.nii.gz"), settings)
    np.testing.assert_array_equal(dicom["label"], files["label"])
    assert dicom["label"].sum() > 0
    # PET: SUVbw from the raw BQML series equals the SUV NIfTI (same crop; CT identical).
    np.testing.assert_allclose(dicom["image"].astype(np.float32), files["image"].astype(np.float32),
                               atol=2e-2)
