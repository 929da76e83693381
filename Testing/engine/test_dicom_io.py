"""DICOM SEG / RTSTRUCT export bound to the real STS_001 CT series and re-imported; SEG import
(the real QIN-HEADNECK SEG); the CLI's clinical outputs and refusals."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
from InteractiveRefineLib.cli import main
from InteractiveRefineLib.dicom_export import write_rtstruct, write_seg
from InteractiveRefineLib.dicom_import import read_label, read_rtstruct_mask, read_seg
from InteractiveRefineLib.errors import ImageError
from InteractiveRefineLib.geometry import read_volume, resample
from InteractiveRefineLib.metrics import dice

from conftest import data_path

CT_DICOM = ("sts_petct", "dicom_cropped", "STS_001", "CT")
RAW_PET = ("sts_petct", "dicom_raw_pet", "STS_001", "FDG_PET", "image")
QIN_SEG = ("qin_hn_0062_seg", "SEG", "tumor.dcm")


@pytest.fixture(scope="module")
def ct_series():
    from InteractiveRefineLib.dicom_series import read_series

    return read_series(data_path(*CT_DICOM, "image"), "CT")


@pytest.fixture(scope="module")
def labels(ct_series):
    """The real GTV (on this CT grid) as GTVp = 1, plus a made-up GTVn = 2 block beside it."""
    label = read_volume(data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001.nii.gz"))
    assert np.allclose(label.ijk_to_ras, ct_series.volume.ijk_to_ras, atol=1e-4)
    out = (label.array > 0.5).astype(np.uint8)
    out[20:26, 5:25, 5:25] = np.where(out[20:26, 5:25, 5:25] == 0, 2, out[20:26, 5:25, 5:25])
    return out


def test_the_rtstruct_reader_reproduces_the_real_rtstruct_label(ct_series):
    truth = read_volume(data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001.nii.gz")).array > 0.5
    mask = read_rtstruct_mask(data_path(*CT_DICOM, "mask", "RS.dcm"), "GTV_Mass_CT", ct_series.volume.grid)
    assert dice(mask, truth) > 0.99


def test_seg_and_rtstruct_reference_the_ct_series_and_reimport(ct_series, labels, tmp_path):
    import highdicom as hd

    grid, ct = ct_series.volume.grid, ct_series.datasets
    write_seg(labels, grid, ct, tmp_path / "seg.dcm")
    write_rtstruct(labels, grid, ct, tmp_path / "rs.dcm")
    seg = hd.seg.segread(str(tmp_path / "seg.dcm"))
    rs = pydicom.dcmread(str(tmp_path / "rs.dcm"))
    for obj in (seg, rs):
        assert obj.StudyInstanceUID == ct[0].StudyInstanceUID and obj.PatientID == ct[0].PatientID
        assert obj.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    instances = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    referenced = {item.ReferencedSOPInstanceUID for item in instances}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert referenced == {d.SOPInstanceUID for d in ct}
    study = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == referenced
    codes = [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in seg.SegmentSequence]
    assert codes == [("GTVp", "86049000"), ("GTVn", "14799000")]
    for value, name in ((1, "GTVp"), (2, "GTVn")):
        volume, _ = read_seg(tmp_path / "seg.dcm", name)
        back = resample(volume.array, volume.grid, grid, order=0) > 0.5
        assert dice(back, labels == value) >= 0.99
        assert dice(read_rtstruct_mask(tmp_path / "rs.dcm", name, grid), labels == value) >= 0.95


def test_export_refuses_an_empty_mask_or_another_grid(ct_series, tmp_path):
    grid, ct = ct_series.volume.grid, ct_series.datasets
    with pytest.raises(ImageError, match="empty"):
        write_seg(np.zeros(grid.shape, np.uint8), grid, ct, tmp_path / "seg.dcm")
    with pytest.raises(ImageError, match="not the source CT series"):
        write_rtstruct(np.ones((3, 4, 5), np.uint8), grid, ct[:3], tmp_path / "rs.dcm")
    assert not list(tmp_path.iterdir())


def test_the_real_qin_seg_imports_by_number_and_label():
    path = data_path(*QIN_SEG)
    primary, segment = read_seg(path, 1)
    assert segment.property_type == "Neoplasm, Primary"
    assert primary.array.sum() == 1126
    assert primary.array.sum() * np.prod(primary.grid.spacing) / 1000 == pytest.approx(47.56, abs=0.01)
    node, segment = read_seg(path, "neoplasm, secondary")
    assert (segment.number, node.array.sum()) == (2, 127)
    # The node lies inside the primary's slab (z -714.6 .. -701.1 mm).
    z = node.grid.index_to_ras(np.argwhere(node.array > 0)[:, ::-1].astype(float))[:, 2]
    assert z.min() == pytest.approx(-714.562, abs=0.01) and z.max() == pytest.approx(-701.062, abs=0.01)
    with pytest.raises(ImageError, match="no segment 'GTVn'.*1 'Neoplasm, Primary'"):
        read_label(path, "GTVn")


def _segment_args(tiny_package_dir, tmp_path, pet):
    ct = str(data_path(*CT_DICOM, "image"))
    return ["segment", "--ct", ct, "--pet", str(pet), "--model", str(tiny_package_dir), "--device", "cpu",
            "--click", "+-70,-12,-791", "--out", str(tmp_path / "mask.nii.gz"),
            "--dicom-seg", str(tmp_path / "seg.dcm"), "--rtstruct", str(tmp_path / "rs.dcm"),
            "--session-log", str(tmp_path / "log.csv")]


def test_cli_segment_from_dicom_writes_seg_rtstruct_measurements_and_log(tiny_package_dir, tmp_path, capsys):
    assert main(_segment_args(tiny_package_dir, tmp_path, data_path(*RAW_PET))) == 0
    summary = json.loads(capsys.readouterr().out)
    gtvp = summary["measurements"]["GTVp"]
    mask = read_volume(tmp_path / "mask.nii.gz").array > 0
    assert gtvp["volume_ml"] == pytest.approx(summary["volume_ml"], abs=1e-3)
    if mask.any():
        assert gtvp["suv_max"] >= gtvp["suv_peak"] > 0 and gtvp["suv_max"] >= gtvp["suv_mean"]
        assert gtvp["mtv_ml"] <= gtvp["volume_ml"] and "41%" in gtvp["mtv_definition"]
        grid = read_volume(tmp_path / "mask.nii.gz").grid
        assert dice(read_rtstruct_mask(tmp_path / "rs.dcm", "GTVp", grid), mask) >= 0.95
    row = next(csv.DictReader(open(tmp_path / "log.csv")))
    assert (row["clicks_positive"], row["clicks_negative"], row["device"]) == ("1", "0", "cpu")
    assert float(row["seconds_to_accept"]) > 0 and row["model"]


def test_cli_refuses_a_bad_pet_tag_and_dicom_export_without_a_ct_series(tiny_package_dir, tmp_path, capsys):
    pet = tmp_path / "pet"
    pet.mkdir()
    for path in sorted(data_path(*RAW_PET).iterdir())[100:110]:
        ds = pydicom.dcmread(str(path))
        ds.PatientWeight = 0
        ds.save_as(str(pet / path.name))
    out = tmp_path / "out"
    assert main(_segment_args(tiny_package_dir, out, pet)) == 2
    assert "PatientWeight (0010,1030)" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())  # nothing written
    nifti = str(data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001__CT.nii.gz"))
    args = _segment_args(tiny_package_dir, out, data_path(*RAW_PET))
    args[args.index("--ct") + 1] = nifti
    assert main(args) == 2
    assert "--ct must be its DICOM folder" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())
    shutil.rmtree(pet)


def test_simulate_takes_a_dicom_seg_label(tiny_package_dir, ct_series, labels, tmp_path, capsys):
    write_seg(labels, ct_series.volume.grid, ct_series.datasets, tmp_path / "seg.dcm")
    ct = str(data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001__CT.nii.gz"))
    pet = str(data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001__PT.nii.gz"))
    common = ["simulate", "--ct", ct, "--pet", pet, "--model", str(tiny_package_dir), "--device", "cpu",
              "--clicks", "0"]
    assert main(common + ["--label", str(tmp_path / "seg.dcm"), "--segment", "GTVp"]) == 0
    from_seg = json.loads(capsys.readouterr().out)["dice"]
    nifti = str(data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001.nii.gz"))
    assert main(common + ["--label", nifti]) == 0
    assert from_seg == json.loads(capsys.readouterr().out)["dice"]


def test_a_whole_seg_reads_as_gtvp_1_and_gtvn_2_by_its_codes(ct_series, labels, tmp_path):
    qin = read_label(data_path(*QIN_SEG))  # legacy SRT codes M-80003 / M-80006
    assert (qin.array == 1).sum() == 1126 and (qin.array == 2).sum() == 127
    write_seg(labels, ct_series.volume.grid, ct_series.datasets, tmp_path / "seg.dcm")
    ours = read_label(tmp_path / "seg.dcm")  # SCT codes 86049000 / 14799000
    back = resample(ours.array, ours.grid, ct_series.volume.grid, order=0)
    np.testing.assert_array_equal(back, labels)
    nifti = data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001.nii.gz")
    with pytest.raises(ImageError, match="--segment applies to a DICOM SEG"):
        read_label(nifti, "1")


def test_a_pet_series_with_a_missing_slice_is_refused(tmp_path):
    from InteractiveRefineLib.dicom_series import read_pet_series

    for index, path in enumerate(sorted(data_path(*RAW_PET).iterdir())[:12]):
        if index != 5:
            shutil.copy(path, tmp_path / path.name)
    with pytest.raises(ImageError, match="not evenly spaced"):
        read_pet_series(tmp_path)
