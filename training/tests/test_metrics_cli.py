"""``interactive-refine-train metrics``: the HECKTOR aggregated Dice on real HNTS-MRG 2024 masks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from interactive_refine_training.cli import main
from interactive_refine_training.seg_metrics import case_id_of
from InteractiveRefineLib.geometry import Volume, write_volume

from conftest import data_path


def test_case_id_is_the_leading_part_of_the_file_name():
    assert case_id_of("77_midRT_mask.nii.gz") == "77"
    assert case_id_of("77_preRT_mask_registered.nii.gz") == "77"
    assert case_id_of("CHUM-001.nii.gz") == "CHUM-001"


def test_reproduces_the_organisers_dsc_agg_on_hntsmrg_masks(tmp_path):
    root = data_path("hntsmrg2024_masks")
    out = tmp_path / "metrics.json"
    assert main(["-q", "metrics", "--pred", str(root / "prediction_masks"),
                 "--truth", str(root / "groundtruth_masks"), "--labels", "1,2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    aggregate = result["aggregate"]
    assert round(aggregate["1"]["dsc_agg"], 4) == 0.2252
    assert round(aggregate["2"]["dsc_agg"], 4) == 0.7249
    # the organisers' per-case mean, counting an empty ground truth as 0 (PROVENANCE.md)
    assert round(aggregate["1"]["dice_mean_empty_as_zero"], 4) == 0.2247
    assert round(aggregate["2"]["dice_mean_empty_as_zero"], 4) == 0.5701
    assert len(result["cases"]) == 15
    case = result["cases"]["8"]  # 8_midRT holds only GTVn: GTVp metrics are undefined -> null
    assert set(case) == {"1", "2"}
    assert set(case["2"]) == {"dice", "hd95_mm", "assd_mm", "surface_dice_1mm"}
    assert case["1"]["hd95_mm"] is None
    assert all(isinstance(case["2"][k], float) for k in case["2"])
    assert set(aggregate["1"]) >= {"dsc_agg", "dice_mean", "hd95_mm_mean"}


def test_pairs_by_case_id_and_computes_exact_values(tmp_path):
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])  # 1 x 1 x 2 mm voxels
    truth = np.zeros((10, 20, 20), np.uint8)
    truth[3:7, 5:15, 5:15] = 1
    pred = np.zeros_like(truth)
    pred[3:7, 5:15, 5:10] = 1
    for folder, name, array in (("t", "5_gt.nii.gz", truth), ("p", "5_pred.nii.gz", pred),
                                ("p", "6_unpaired.nii.gz", pred)):
        write_volume(Volume.from_array(array, affine), tmp_path / folder / name, dtype=np.uint8)
    out = tmp_path / "m.json"
    assert main(["-q", "metrics", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"),
                 "--labels", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["cases"]) == ["5"]
    assert result["cases"]["5"]["1"]["dice"] == pytest.approx(2 * 200 / (400 + 200))
    assert result["aggregate"]["1"]["dsc_agg"] == pytest.approx(2 / 3)
