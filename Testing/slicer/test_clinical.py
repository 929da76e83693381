"""The Logic's clinical additions on real MRML: lesion measurements, the opt-in session log, a PET
DICOM folder loaded as SUV, and the batch's measurement columns and session log."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "InteractiveRefine"))

import InteractiveRefineBatch  # noqa: E402

RAW_PET = ("sts_petct", "dicom_raw_pet", "STS_001", "FDG_PET", "image")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_measurements_and_session_log_with_undo(logic, sts_nodes, tiny_package_dir, tmp_path):
    ct, pet, truth = sts_nodes
    assert logic.acceptContour() is None  # no log unless asked for
    logic.setSessionLog(tmp_path / "log.csv", "STS_001")
    logic.segment(ct, pet, None, modelPath=str(tiny_package_dir), device="cpu")
    centre = logic.session.grid.center_ras()
    logic.addClick(centre, True)
    logic.addClick(centre + np.array([5.0, 0.0, 0.0]), False)
    logic.undo()
    values = logic.lesionMeasurements()["GTVp"]
    assert values["volume_ml"] == pytest.approx(logic.lastResult.volume_ml, abs=1e-3)
    if values["volume_ml"] > 0:
        assert values["suv_max"] >= values["suv_peak"] > 0 and values["suv_max"] >= values["suv_mean"]
    segmentation = logic.sessionNodes.segmentation.GetSegmentation()
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("GTVp"))
    assert "SCT^86049000^Neoplasm, Primary" in segment.GetTerminology()
    row = logic.acceptContour()
    assert (row["clicks_positive"], row["clicks_negative"], row["undos"]) == (1, 1, 1)
    written = _rows(tmp_path / "log.csv")
    assert len(written) == 1 and written[0]["case_id"] == "STS_001"
    assert float(written[0]["seconds_to_accept"]) > 0


def test_pet_dicom_folder_loads_as_suv(logic, scene):
    from InteractiveRefineLib.geometry import read_volume, resample
    from InteractiveRefineSlicerLib.volumes import volumeFromNode

    node = logic.loadPetVolume(str(data_path(*RAW_PET)), "PET")
    assert "BQML decayed to the scan start" in node.GetAttribute("InteractiveRefine.SUV")
    volume = volumeFromNode(node, "PET")
    reference = read_volume(data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001__PT.nii.gz"))
    converted = resample(volume.array, volume.grid, reference.grid)
    body = reference.array > 0.5
    assert np.median(converted[body] / reference.array[body]) == pytest.approx(1.0, abs=5e-4)


def test_batch_writes_measurements_and_session_log(scene, tiny_package_dir, tmp_path):
    case = data_path("sts_petct", "hecktor_layout", "STS_001")
    manifest = tmp_path / "cases.csv"
    ct, label = case / "STS_001__CT.nii.gz", case / "STS_001.nii.gz"
    manifest.write_text(f"id,ct,pet,label\nSTS_001,{ct},{data_path(*RAW_PET)},{label}\n")
    out = tmp_path / "out"
    args = ["--input", str(manifest), "--output", str(out), "--model", str(tiny_package_dir),
            "--clicks", "1", "--device", "cpu"]
    assert InteractiveRefineBatch.main(args) == 0
    rows = _rows(out / "metrics.csv")
    assert [r["clicks"] for r in rows] == ["0", "1"]
    for row in rows:
        if float(row["volume_ml"]) > 0:
            assert float(row["suv_max"]) >= float(row["suv_mean"]) > 0 and row["tlg"] != ""
    log = _rows(out / "session_log.csv")
    assert len(log) == 1 and log[0]["clicks_total"] == "1" and log[0]["device"] == "cpu"


def test_batch_exports_dicom_seg_and_rtstruct_for_a_ct_series(scene, tiny_package_dir, tmp_path):
    """A manifest whose CT is a DICOM folder: with --dicom-export the batch writes a SEG and an
    RTSTRUCT of each case's final mask, referencing that series, and both re-import to it."""
    from InteractiveRefineLib.dicom_import import read_rtstruct_mask, read_seg
    from InteractiveRefineLib.dicom_series import read_series
    from InteractiveRefineLib.geometry import resample
    from InteractiveRefineLib.metrics import dice

    ct_dir = data_path("sts_petct", "dicom_cropped", "STS_001", "CT", "image")
    case = data_path("sts_petct", "hecktor_layout", "STS_001")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"id,ct,pet,label\nSTS_001,{ct_dir},{case / 'STS_001__PT.nii.gz'},\n")
    out = tmp_path / "out"
    args = ["--input", str(manifest), "--output", str(out), "--model", str(tiny_package_dir),
            "--device", "cpu", "--dicom-export"]
    assert InteractiveRefineBatch.main(args) == 0
    series = read_series(ct_dir, "CT")
    seg, _ = read_seg(out / "STS_001.seg.dcm", 1)
    grid = series.volume.grid
    mask = resample(seg.array, seg.grid, grid, order=0) > 0.5  # SEG frames back on the CT series
    assert mask.sum() > 100
    rtstruct = read_rtstruct_mask(out / "STS_001.rtstruct.dcm", "GTVp", grid)
    assert dice(rtstruct, mask) >= 0.95
