"""The ``interactive-refine`` command line on real data (tiny random model)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from InteractiveRefineLib.cli import main

from conftest import data_path

STS = ("sts_petct", "hecktor_layout", "STS_001")
CHGJ = ("hecktor2020_chgj015",)


def _sts_paths():
    return [str(data_path(*STS, f"STS_001{s}.nii.gz")) for s in ("__CT", "__PT", "")]


def _ct_centre(sign: str, offset=(0.0, 0.0, 0.0)) -> str:
    from InteractiveRefineLib.geometry import read_volume

    centre = read_volume(_sts_paths()[0]).grid.center_ras() + np.asarray(offset)
    return sign + ",".join(f"{v:.2f}" for v in centre)


def test_segment_writes_mask_with_exact_ct_geometry(tiny_package_dir, tmp_path, capsys):
    ct, pet, _ = _sts_paths()
    out = tmp_path / "mask.nii.gz"
    rc = main(["segment", "--ct", ct, "--pet", pet, "--model", str(tiny_package_dir),
               "--click", _ct_centre("+"), "--device", "cpu", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["clicks"] == 1 and len(summary["timings_s"]["per_click"]) == 1
    mask, reference = sitk.ReadImage(str(out)), sitk.ReadImage(ct)
    assert mask.GetSize() == reference.GetSize()
    assert mask.GetSpacing() == pytest.approx(reference.GetSpacing(), abs=1e-6)
    assert mask.GetOrigin() == pytest.approx(reference.GetOrigin(), abs=1e-4)
    assert mask.GetDirection() == pytest.approx(reference.GetDirection(), abs=1e-6)
    values = np.unique(sitk.GetArrayFromImage(mask))
    assert set(values.tolist()) <= {0, 1}
    assert summary["voxels"] == int(sitk.GetArrayFromImage(mask).sum())
    # A 48^3 ROI: auto refines the whole ROI in float32.
    assert (summary["refine_mode"], summary["precision"]) == ("full", "float32")


def test_segment_in_reduced_precision_and_a_bad_precision_is_refused(tiny_package_dir, tmp_path, capsys):
    ct, pet, _ = _sts_paths()
    out = tmp_path / "mask.nii.gz"
    args = ["segment", "--ct", ct, "--pet", pet, "--model", str(tiny_package_dir), "--device", "cpu",
            "--click", _ct_centre("+"), "--out", str(out)]
    assert main(args + ["--precision", "reduced"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["precision"] == "bfloat16" and out.is_file()
    # The bfloat16 previews were recomputed in float32 before writing: the float32 run's mask.
    assert summary["exact"] is True
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert main(args + ["--precision", "float32"]) == 0
    assert json.loads(capsys.readouterr().out)["exact"] is True
    np.testing.assert_array_equal(written, sitk.GetArrayFromImage(sitk.ReadImage(str(out))))
    assert main(args + ["--precision", "reduced", "--keep-previews"]) == 0
    assert json.loads(capsys.readouterr().out)["exact"] is False
    out.unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--precision", "half"])
    assert exit_info.value.code == 2 and "invalid choice: 'half'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--click", "+0,0,900"], "outside the CT image"),
        (["--click", "0,0,0"], "must start with"),
        (["--roi-center", "1,2"], "three numbers"),
    ],
)
def test_segment_bad_input_writes_nothing(tiny_package_dir, tmp_path, capsys, extra, message):
    ct, pet, _ = _sts_paths()
    out = tmp_path / "mask.nii.gz"
    rc = main(["segment", "--ct", ct, "--pet", pet, "--model", str(tiny_package_dir), "--device", "cpu",
               "--out", str(out)] + extra)
    assert rc == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_a_fast_window_that_is_not_a_positive_integer_is_refused(tiny_package_dir, tmp_path, capsys):
    ct, pet, _ = _sts_paths()
    out = tmp_path / "mask.nii.gz"
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--ct", ct, "--pet", pet, "--model", str(tiny_package_dir), "--device", "cpu",
              "--out", str(out), "--refine-mode", "fast", "--fast-window", "0"])
    assert exit_info.value.code == 2
    assert "--fast-window: expected a positive integer, got '0'" in capsys.readouterr().err
    assert not out.exists()


def test_segment_missing_file_is_named(tiny_package_dir, tmp_path, capsys):
    rc = main(["segment", "--ct", str(tmp_path / "no_ct.nii.gz"), "--pet", str(tmp_path / "x.nii.gz"),
               "--model", str(tiny_package_dir), "--out", str(tmp_path / "m.nii.gz")])
    assert rc == 2 and "no_ct.nii.gz" in capsys.readouterr().err


def test_negative_click_with_negative_coordinate_parses(tiny_package_dir, tmp_path):
    ct, pet, _ = _sts_paths()
    rc = main(["segment", "--ct", ct, "--pet", pet, "--model", str(tiny_package_dir), "--device", "cpu",
               "--click", _ct_centre("-"), "--out", str(tmp_path / "m.nii.gz")])
    assert rc == 0


def test_simulate_json_contract(tiny_package_dir, tmp_path, capsys):
    ct, pet, label = _sts_paths()
    out = tmp_path / "sim.json"
    rc = main(["simulate", "--ct", ct, "--pet", pet, "--label", label, "--model", str(tiny_package_dir),
               "--clicks", "3", "--seed", "1", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert len(result["dice"]) == len(result["hd95_mm"]) == 4
    assert len(result["clicks"]) == len(result["seconds_per_click"]) <= 3
    for click in result["clicks"]:
        assert len(click["ras"]) == 3 and isinstance(click["positive"], bool)
    rerun = tmp_path / "again.json"
    main(["simulate", "--ct", ct, "--pet", pet, "--label", label, "--model", str(tiny_package_dir),
          "--clicks", "3", "--seed", "1", "--device", "cpu", "--json", str(rerun)])
    assert json.loads(rerun.read_text())["dice"] == result["dice"]
    # In reduced precision every preview is made exact before it is scored: the same curve.
    reduced = tmp_path / "reduced.json"
    main(["simulate", "--ct", ct, "--pet", pet, "--label", label, "--model", str(tiny_package_dir),
          "--clicks", "3", "--seed", "1", "--device", "cpu", "--precision", "reduced",
          "--json", str(reduced)])
    assert json.loads(reduced.read_text())["dice"] == result["dice"]


def test_demo_writes_png_on_the_sample_case(tiny_package_dir, tmp_path):
    data_path(*CHGJ, "CHGJ015_ct.nii.gz")
    rc = main(["demo", "--model", str(tiny_package_dir), "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 0
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    result = json.loads((tmp_path / "demo.json").read_text())
    assert result["case"] == "CHGJ015" and len(result["dice"]) == 6
    # The model's box is centred on the tumour (the GTVp centroid), as a user's ROI would be.
    assert result["roi_center_ras"] == pytest.approx([-28.71, 86.12, -137.00], abs=0.01)


def test_click_syntax():
    from InteractiveRefineLib.cli import _join_click_values, parse_click

    assert parse_click("--5,3.5,0") == ((-5.0, 3.5, 0.0), False)
    assert parse_click("+-5,3,1e1") == ((-5.0, 3.0, 10.0), True)
    assert _join_click_values(["--click", "-1,2,3"]) == ["--click=-1,2,3"]
