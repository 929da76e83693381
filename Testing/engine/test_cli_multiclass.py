"""The command line with a model of two classes (GTVp 1, GTVn 2): ``n+`` clicks, the label map,
``--out-dir``, per-class measurements, ``--suggest`` and ``simulate`` per class; and ``n+`` refused
for a one-class model. Real files in tmp_path, tiny random packages."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from InteractiveRefineLib.cli import main, parse_class_click
from InteractiveRefineLib.errors import ImageError, InteractiveRefineError
from InteractiveRefineLib.geometry import Volume, write_volume
from InteractiveRefineLib.measurements import classes_of, measure, measure_classes
from InteractiveRefineLib.phantom import make_phantom


@pytest.fixture(scope="module")
def two_class_dir(two_class_package_dir):
    return two_class_package_dir


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The engine's phantom (a node beside the tumour as label 2) as CT, PET and label files."""
    folder = tmp_path_factory.mktemp("phantom_files")
    ct, pet, label = make_phantom()
    k, j, i = np.meshgrid(*[np.arange(n) for n in label.shape], indexing="ij")
    node = ((k - 20) * 2.0) ** 2 + (j - 48) ** 2 + (i - 62) ** 2 <= 6.0**2
    values = label.array.astype(np.uint8)
    values[node & (values == 0)] = 2
    paths = {name: folder / f"{name}.nii.gz" for name in ("ct", "pet", "label")}
    write_volume(ct, paths["ct"])
    write_volume(pet, paths["pet"])
    write_volume(Volume.from_array(values, label.grid.ijk_to_ras), paths["label"], dtype=np.uint8)
    centre = ct.grid.center_ras()
    return {name: str(path) for name, path in paths.items()} | {"centre": centre}


def _click(sign: str, ras) -> str:
    return sign + ",".join(f"{v:.2f}" for v in ras)


def _segment(files, model, out_args, clicks, *extra):
    args = ["segment", "--ct", files["ct"], "--pet", files["pet"], "--model", str(model), "--device", "cpu",
            "--roi-center", _click("", files["centre"])]
    for click in clicks:
        args += ["--click", click]
    return main(args + list(out_args) + list(extra))


def test_click_syntax_with_classes():
    assert parse_class_click("n+1,-2,3.5") == ((1.0, -2.0, 3.5), True, "point", "gtvn")
    assert parse_class_click("+1,2,3") == ((1.0, 2.0, 3.0), True, "point", None)
    assert parse_class_click("--1,2,3") == ((-1.0, 2.0, 3.0), False, "point", None)
    assert parse_class_click("t+1,2,3")[2:] == ("threshold", None)
    with pytest.raises(InteractiveRefineError, match="not any class"):
        parse_class_click("n-1,2,3")
    with pytest.raises(InteractiveRefineError, match="three numbers"):
        parse_class_click("n+1,2")


def test_node_click_with_a_one_class_model_is_refused_and_writes_nothing(tiny_package_dir, files, tmp_path,
                                                                         capsys):
    out, folder = tmp_path / "mask.nii.gz", tmp_path / "classes"
    rc = _segment(files, tiny_package_dir, ["--out", str(out), "--out-dir", str(folder)],
                  [_click("+", files["centre"]), _click("n+", files["centre"])])
    err = capsys.readouterr().err
    assert rc == 2
    assert "n+" in err and "gtvn" in err and "segments only gtvp" in err
    assert not out.exists() and not folder.exists()
    assert list(tmp_path.iterdir()) == []


def test_label_map_and_one_file_per_class(two_class_dir, files, tmp_path, capsys):
    out, folder = tmp_path / "labels.nii.gz", tmp_path / "classes"
    centre = np.asarray(files["centre"])
    clicks = [_click("n+", centre), _click("+", centre + 6.0), _click("-", centre - 8.0)]
    rc = _segment(files, two_class_dir, ["--out", str(out), "--out-dir", str(folder)], clicks, "--suggest",
                  "--uncertainty-passes", "2")
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    reference = sitk.ReadImage(files["ct"])
    for name, value in (("gtvp", 1), ("gtvn", 2)):
        image = sitk.ReadImage(str(folder / f"{name}.nii.gz"))
        assert image.GetSize() == reference.GetSize()
        assert image.GetOrigin() == pytest.approx(reference.GetOrigin(), abs=1e-4)
        assert image.GetDirection() == pytest.approx(reference.GetDirection(), abs=1e-6)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), (labels == value).astype(np.uint8))
    assert summary["out_dir"] == {"gtvp": str(folder / "gtvp.nii.gz"), "gtvn": str(folder / "gtvn.nii.gz")}
    assert summary["labels"] == {"gtvp": 1, "gtvn": 2}
    assert summary["click_classes"] == ["gtvn", "gtvp", None]
    assert summary["voxels"] == int(np.count_nonzero(labels))
    voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
    measured = summary["measurements"]
    assert set(measured) == {"GTVp", "GTVn"}  # both rows, even an empty class
    for name, value in (("GTVp", 1), ("GTVn", 2)):
        assert measured[name]["volume_ml"] == pytest.approx((labels == value).sum() * voxel_ml, abs=1e-3)
    suggestion = summary["uncertainty"]["suggestion"]
    assert suggestion is None or suggestion["label"] in ("gtvp", "gtvn")


def test_out_dir_alone_with_a_one_class_model(tiny_package_dir, files, tmp_path, capsys):
    folder = tmp_path / "classes"
    rc = _segment(files, tiny_package_dir, ["--out-dir", str(folder)], [_click("+", files["centre"])])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["out"] is None
    assert sorted(p.name for p in folder.iterdir()) == ["gtvp.nii.gz"]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "gtvp.nii.gz")))
    assert set(np.unique(mask).tolist()) <= {0, 1} and int(mask.sum()) == summary["voxels"]
    assert set(summary["measurements"]) == {"GTVp"}


def test_segment_needs_an_output(tiny_package_dir, files, capsys):
    assert _segment(files, tiny_package_dir, [], []) == 2
    assert "--out" in capsys.readouterr().err


def test_simulate_prints_dice_per_class(two_class_dir, files, tmp_path, capsys):
    out = tmp_path / "sim.json"
    rc = main(["simulate", "--ct", files["ct"], "--pet", files["pet"], "--label", files["label"],
               "--model", str(two_class_dir), "--clicks", "2", "--device", "cpu", "--user", "hnuiseg",
               "--roi-center", _click("", files["centre"]), "--json", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(summary["dice_per_class"]) == {"gtvp", "gtvn"}
    for name, curve in summary["dice_per_class"].items():
        assert curve == [round(d, 4) for d in result["dice_per_class"][name]]
        assert len(curve) == len(summary["dice"])


def test_measurements_per_class_of_a_label_map():
    ct = Volume.from_array(np.zeros((10, 10, 10), np.float32), np.diag([2.0, 1.0, 1.0, 1.0]))
    pet = Volume.from_array(np.ones((10, 10, 10), np.float32), np.diag([2.0, 1.0, 1.0, 1.0]))
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels of 2 uL: 0.016 mL
    labels[5:8, 5:8, 5:8] = 2  # 27 voxels: 0.054 mL
    out = measure_classes(labels, ct.grid, pet, classes_of({"gtvp": 1, "gtvn": 2}))
    assert out["GTVp"]["volume_ml"] == pytest.approx(0.016)
    assert out["GTVn"]["volume_ml"] == pytest.approx(0.054)
    assert out["GTVp"]["suv_max"] == pytest.approx(1.0)
    only_p = measure_classes((labels == 1).astype(np.uint8), ct.grid, pet, classes_of({"gtvp": 1, "gtvn": 2}))
    assert only_p["GTVn"]["volume_ml"] == 0 and only_p["GTVn"]["suv_max"] is None
    assert set(measure_classes(labels == 1, ct.grid, None)) == {"GTVp"}  # default: no empty GTVn row
    with pytest.raises(ImageError, match="label map"):
        measure(labels, ct.grid, pet)  # would count GTVn voxels as the class's
