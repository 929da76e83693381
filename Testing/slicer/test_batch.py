"""InteractiveRefineBatch.py: in-process on slicer-core, and as a plain-Python command."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BATCH = REPO / "InteractiveRefine" / "InteractiveRefineBatch.py"
sys.path.insert(0, str(BATCH.parent))

import InteractiveRefineBatch  # noqa: E402


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_batch_writes_segmentations_and_metrics(scene, tiny_package_dir, tmp_path, module):
    import slicer

    from conftest import data_path

    case = data_path("sts_petct", "hecktor_layout", "STS_001")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "id,ct,pet,label\n"
        f"STS_001,{case / 'STS_001__CT.nii.gz'},{case / 'STS_001__PT.nii.gz'},{case / 'STS_001.nii.gz'}\n"
        f"BROKEN,{tmp_path / 'missing_CT.nii.gz'},,\n"
    )
    out = tmp_path / "out"
    status = InteractiveRefineBatch.main(
        [
            "--",
            "--input",
            str(manifest),
            "--output",
            str(out),
            "--model",
            str(tiny_package_dir),
            "--clicks",
            "2",
            "--seed",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert status == 1  # one case failed, the other was still done
    rows = read_rows(out / "metrics.csv")
    good = [r for r in rows if r["case_id"] == "STS_001"]
    assert [int(r["clicks"]) for r in good] == [0, 1, 2]
    assert all(0.0 <= float(r["dice"]) <= 1.0 and float(r["hd95_mm"]) >= 0 for r in good)
    # The one-click PET threshold floor beside the model on the case's 0-click row.
    assert 0.0 < float(good[0]["threshold40_dice"]) <= 1.0 and 0.0 < float(good[0]["threshold50_dice"]) <= 1.0
    assert 0.0 <= float(good[0]["model_one_click_dice"]) <= 1.0 and good[1]["threshold40_dice"] == ""
    broken = [r for r in rows if r["case_id"] == "BROKEN"]
    assert len(broken) == 1 and "Cannot load the volume" in broken[0]["error"]

    # The .seg.nrrd holds GTVp on the CT geometry.
    segmentation = slicer.modules.segmentations.logic().LoadSegmentationFromFile(
        str(out / "STS_001.seg.nrrd")
    )
    assert segmentation is not None
    ct = module.InteractiveRefineLogic.loadVolume(str(case / "STS_001__CT.nii.gz"), "CT")
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("GTVp")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, ct)
    assert mask.shape == slicer.util.arrayFromVolume(ct).shape and mask.any()


def test_batch_as_plain_python_command(tiny_package_dir, tmp_path):
    from conftest import data_path

    folder = data_path("sts_petct", "hecktor_layout")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(BATCH),
            "--input",
            str(folder),
            "--output",
            str(out),
            "--model",
            str(tiny_package_dir),
            "--clicks",
            "1",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["cases"] == 1 and summary["failed"] == []
    assert (out / "STS_001.seg.nrrd").is_file()
    dice = [float(r["dice"]) for r in read_rows(out / "metrics.csv")]
    assert len(dice) == 2 and np.all(np.isfinite(dice))
