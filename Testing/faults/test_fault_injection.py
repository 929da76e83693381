"""Fault injection: bad files, bad cards, bad outputs and interruptions against the command line.

Every fault is a corrupted copy of a real file from shared/data, made in the test's temporary
folder. Each must give exit status 2 and one line on stderr naming the file, field or value and
what was expected, write no output (no partial or temporary file either) and leave every input
byte-for-byte as it was.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import faults
import numpy as np
import pytest
from InteractiveRefineLib import output_files
from InteractiveRefineLib.cli import main

from conftest import data_path

STS = ("sts_petct", "hecktor_layout", "STS_001")
DICOM = ("sts_petct", "dicom_cropped", "STS_001")


@pytest.fixture()
def src():
    return SimpleNamespace(
        ct=data_path(*STS, "STS_001__CT.nii.gz"), pet=data_path(*STS, "STS_001__PT.nii.gz"),
        label=data_path(*STS, "STS_001.nii.gz"),
        ct_dicom=data_path(*DICOM, "CT", "image"), pet_dicom=data_path(*DICOM, "PET", "image"),
    )


def _run(capsys, command, ct, pet, model, out_dir, extra=(), label=None, out=None, json_out=None):
    argv = [command, "--ct", str(ct), "--pet", str(pet), "--model", str(model), "--device", "cpu"]
    if command == "segment":
        argv += ["--out", str(out or out_dir / "mask.nii.gz")]
    else:
        argv += ["--label", str(label), "--clicks", "1", "--json", str(json_out or out_dir / "r.json")]
    rc = main(argv + list(extra))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# id -> (builder(tmp, src, model) -> run overrides, the message's expected fragment(s))
FAULTS = {
    "ct_truncated_gz": (lambda t, s, m: {"ct": faults.truncated(s.ct, t)},
                        ["truncated_STS_001__CT.nii.gz", "gzip stream is damaged or truncated"]),
    "pet_truncated_gz": (lambda t, s, m: {"pet": faults.truncated(s.pet, t)},
                         ["truncated_STS_001__PT.nii.gz", "gzip stream is damaged or truncated"]),
    "ct_gzip_crc": (lambda t, s, m: {"ct": faults.bad_crc(s.ct, t)}, ["crc_STS_001__CT", "CRC check failed"]),
    "ct_nii_truncated": (lambda t, s, m: {"ct": faults.uncompressed_truncated(s.ct, t)},
                         ["truncated_STS_001__CT_full.nii", "truncated: the NIfTI header announces"]),
    "ct_header_dims_larger": (lambda t, s, m: {"ct": faults.header_dims(
        s.ct, t, [3, 198, 202, 80, 1, 1, 1, 1])},
                              ["dims_STS_001__CT", "truncated: the NIfTI header announces"]),
    "ct_header_dims_zero": (lambda t, s, m: {"ct": faults.header_dims(s.ct, t, [3, 0, 202, 59, 1, 1, 1, 1])},
                            ["dims_STS_001__CT", "invalid dimensions [3, 0, 202, 59"]),
    "ct_nan": (lambda t, s, m: {"ct": faults.with_values(s.ct, t, "nan.nii.gz", _poke(np.nan))},
               ["nan.nii.gz: 3 NaN or infinite voxels; expected finite values"]),
    "pet_inf": (lambda t, s, m: {"pet": faults.with_values(s.pet, t, "inf.nii.gz", _poke(np.inf))},
                ["inf.nii.gz: 3 NaN or infinite voxels"]),
    "pet_scaled_1e30": (lambda t, s, m: {"pet": faults.with_values(s.pet, t, "p.nii.gz", lambda a: a * 1e30)},
                        ["PET image has values up to 2.54e+31", "expected |value| <= 1e+07"]),
    "pet_scaled_3e38": (lambda t, s, m: {"pet": faults.with_values(
        s.pet, t, "p.nii.gz", lambda a: a / a.max() * 3e38)}, ["PET image has values up to 3e+38"]),
    "ct_as_pet_same_file": (lambda t, s, m: {"pet": s.ct},
                            ["--ct and --pet name the same file", "STS_001__CT"]),
    "ct_as_pet_copy": (lambda t, s, m: {"pet": faults.with_values(s.ct, t, "copy.nii.gz", lambda a: a)},
                       ["PET image is identical to the CT image"]),
    "ct_binary": (lambda t, s, m: {"ct": faults.with_values(s.ct, t, "b.nii.gz", lambda a: a > 0, np.uint8)},
                  ["CT image holds only 0 and 1: a mask, not Hounsfield units"]),
    "ct_sheared": (lambda t, s, m: {"ct": faults.sheared(s.ct, t, "shear.nii.gz")},
                   ["shear.nii.gz: the NIfTI sform axes are not orthogonal", "expected 90"]),
    "pet_sheared": (lambda t, s, m: {"pet": faults.sheared(s.pet, t, "shear.nii.gz", 0.05)},
                    ["shear.nii.gz: the NIfTI sform axes are not orthogonal"]),
    "pet_other_frame": (lambda t, s, m: {"pet": faults.shifted(s.pet, t, "far.nii.gz", (0, 0, 1000))},
                        ["PET does not overlap the CT region of interest"]),
    "pet_low_coverage": (lambda t, s, m: {"pet": faults.shifted(s.pet, t, "part.nii.gz", (0, 0, 105))},
                         ["PET covers only", "expected at least 50%"]),
    "dicom_missing_slice": (lambda t, s, m: {"ct": faults.dicom_copy(s.ct_dicom, t, "ct_gap", drop=20)},
                            ["ct_gap: the DICOM slices are not evenly spaced"]),
    "dicom_mixed_series": (lambda t, s, m: {"ct": faults.dicom_copy(
        s.ct_dicom, t, "mixed", extra=s.pet_dicom)},
                           ["mixed holds 2 DICOM series; expected one"]),
    "card_spacing_zero": (lambda t, s, m: {"model": faults.card_with(
        m, t, "preprocessing", "spacing_mm", [0, 0, 0])},
                          ["preprocessing.spacing_mm must be 3 positive finite numbers, got [0, 0, 0]"]),
    "card_roi_strings": (lambda t, s, m: {"model": faults.card_with(
        m, t, "preprocessing", "roi_size_vox", ["48", "48", "48"])}, ["preprocessing.roi_size_vox must be"]),
    "card_threshold_word": (lambda t, s, m: {"model": faults.card_with(m, t, None, "threshold", "high")},
                            ["threshold must be a number between 0 and 1 (exclusive), got 'high'"]),
    "card_unknown_norm": (lambda t, s, m: {"model": faults.card_with(m, t, "network", "norm", "FANCY")},
                          ["network.norm must be a MONAI norm name", "got 'FANCY'"]),
    "out_is_ct": (lambda t, s, m: {"out": s.ct}, ["is an input", "choose another output file"]),
    "out_is_folder": (lambda t, s, m: {"out": _folder(t / "mask.nii.gz")},
                      ["mask.nii.gz exists and is not a regular file"]),
    "out_below_file": (lambda t, s, m: {"out": _file(t / "plain.txt") / "mask.nii.gz"},
                       ["plain.txt is a file, not a folder"]),
    "out_no_extension": (lambda t, s, m: {"out": t / "out" / "mask"}, ["mask: unknown image extension"]),
    "out_unknown_extension": (lambda t, s, m: {"out": t / "out" / "mask.png"},
                              ["mask.png: unknown image extension; expected one of .nii.gz"]),
    "out_device": (lambda t, s, m: {"out": Path("/dev/full")}, ["/dev/full: unknown image extension"]),
    "json_is_folder": (lambda t, s, m: {"command": "simulate", "json_out": _folder(t / "r.json")},
                       ["--json", "r.json exists and is not a regular file"]),
    "json_is_device": (lambda t, s, m: {"command": "simulate", "json_out": Path("/dev/full")},
                       ["--json /dev/full exists and is not a regular file"]),
    "json_is_label": (lambda t, s, m: {"command": "simulate", "json_out": s.label}, ["is an input"]),
    "label_truncated": (lambda t, s, m: {"command": "simulate", "label": faults.truncated(s.label, t)},
                        ["truncated_STS_001.nii.gz", "gzip stream is damaged or truncated"]),
    "label_other_grid_no_overlap": (lambda t, s, m: {"command": "simulate", "label": faults.shifted(
        s.label, t, "far_label.nii.gz", (0, 0, 1000))},
        ["far_label.nii.gz: the label has no voxel with value 1 inside the CT"]),
}


def _poke(value):
    def change(array):
        flat = array.reshape(-1).copy()
        flat[[10, 1000, flat.size // 2]] = value
        return flat.reshape(array.shape)

    return change


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _file(path: Path) -> Path:
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_exits_2_with_a_message_and_writes_nothing(fault, src, tiny_package_dir, tmp_path, capsys):
    build, expected = FAULTS[fault]
    made = tmp_path / "inputs"
    made.mkdir()
    run = {"command": "segment", "ct": src.ct, "pet": src.pet, "label": src.label, "model": tiny_package_dir}
    run.update(build(made, src, tiny_package_dir))
    inputs = [run["ct"], run["pet"], run["label"], run["model"]]
    before = faults.sha256_tree(inputs)
    out_dir = tmp_path / "out"
    rc, out, err = _run(capsys, run.pop("command"), run.pop("ct"), run.pop("pet"), run.pop("model"),
                        out_dir, **run)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "", err
    assert len(lines) == 1 and lines[0].startswith("interactive-refine "), err
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    assert not out_dir.exists(), "nothing may be written"
    assert faults.sha256_tree(inputs) == before, "an input changed"
    assert not list(made.glob(".*")), "a temporary file was left beside the inputs"


def test_low_pet_coverage_is_accepted_when_allowed_and_reported(src, tiny_package_dir, tmp_path, capsys):
    pet = faults.shifted(src.pet, tmp_path, "part.nii.gz", (0, 0, 105))
    rc, out, err = _run(capsys, "segment", src.ct, pet, tiny_package_dir, tmp_path,
                        extra=["--allow-low-pet-coverage"])
    summary = json.loads(out)
    assert rc == 0 and 0.0 < summary["pet_coverage"] < 0.5 and (tmp_path / "mask.nii.gz").is_file()


def test_an_8_bit_ct_is_used_with_a_warning(src, tiny_package_dir, tmp_path, capsys, caplog):
    ct = faults.with_values(src.ct, tmp_path, "u8.nii.gz", lambda a: (a - a.min()) / np.ptp(a) * 255,
                            np.uint8)
    rc, out, err = _run(capsys, "segment", ct, src.pet, tiny_package_dir, tmp_path)
    assert rc == 0 and "the CT's values lie in 0..255: no fat or air below -100 HU" in caplog.text


def test_a_label_on_another_grid_is_resampled(src, tiny_package_dir, tmp_path, capsys):
    """A label stored on another (coarser, flipped) grid that overlaps the CT is used as is."""
    label = faults.flipped(src.label, tmp_path, "flipped_label.nii.gz", axes=(0,))
    rc, out, err = _run(capsys, "simulate", src.ct, src.pet, tiny_package_dir, tmp_path, label=label)
    assert rc == 0, err
    assert len(json.loads((tmp_path / "r.json").read_text())["dice"]) >= 1


@pytest.mark.parametrize("option", ["--seed", "--clicks"])
def test_negative_seed_or_clicks_is_refused_by_the_parser(option, src, tiny_package_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["simulate", "--ct", str(src.ct), "--pet", str(src.pet), "--label", str(src.label),
              "--model", str(tiny_package_dir), option, "-1", "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and f"argument {option}: expected an integer >= 0, got '-1'" in err[-1]
    assert not (tmp_path / "r.json").exists()


def _previous_output(tmp_path: Path) -> tuple[Path, bytes]:
    out = tmp_path / "out" / "mask.nii.gz"
    out.parent.mkdir()
    out.write_bytes(b"previous valid output")
    return out, out.read_bytes()


def test_a_full_disk_keeps_the_previous_output(src, tiny_package_dir, tmp_path, capsys, monkeypatch):
    out, previous = _previous_output(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output_files.os, "fsync", full)
    rc, _, err = _run(capsys, "segment", src.ct, src.pet, tiny_package_dir, out.parent, out=out)
    assert rc == 2 and err.strip() == f"interactive-refine segment: error: cannot write the image {out}: " \
                                      "No space left on device"
    assert out.read_bytes() == previous and sorted(out.parent.iterdir()) == [out]


def test_an_unwritable_folder_is_refused_before_any_work(src, tiny_package_dir, tmp_path, capsys,
                                                          monkeypatch):
    """Root may write anywhere, so the folder's refusal is injected where the probe creates a file."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(output_files.tempfile, "mkstemp", refuse)
    monkeypatch.setattr("InteractiveRefineLib.cli._session", lambda *a: pytest.fail("computed first"))
    rc, _, err = _run(capsys, "segment", src.ct, src.pet, tiny_package_dir, tmp_path)
    assert rc == 2 and f"cannot write in {tmp_path}: Permission denied" in err


def test_a_read_only_target_is_refused_before_any_work(src, tiny_package_dir, tmp_path, capsys,
                                                       monkeypatch):
    """Root may write a read-only file, so read-only is injected where the check asks."""
    out, previous = _previous_output(tmp_path)
    monkeypatch.setattr(output_files.os, "access", lambda path, mode: Path(path) != out)
    monkeypatch.setattr("InteractiveRefineLib.cli._session", lambda *a: pytest.fail("computed first"))
    rc, _, err = _run(capsys, "segment", src.ct, src.pet, tiny_package_dir, out.parent, out=out)
    assert rc == 2 and err.strip().endswith(f"--out {out} is read-only; choose another output file or "
                                            "make it writable")
    assert out.read_bytes() == previous


def test_ctrl_c_stops_cleanly_and_keeps_the_previous_output(src, tiny_package_dir, tmp_path, capsys,
                                                            monkeypatch):
    from InteractiveRefineLib import geometry

    out, previous = _previous_output(tmp_path)
    original = geometry._write_array

    def interrupted(array, matrix, path):
        original(array, matrix, path)  # the temporary file is complete, the rename not done
        raise KeyboardInterrupt

    monkeypatch.setattr(geometry, "_write_array", interrupted)
    rc, _, err = _run(capsys, "segment", src.ct, src.pet, tiny_package_dir, out.parent, out=out)
    assert rc == 130 and err.strip() == "interactive-refine segment: interrupted; no output was written"
    assert out.read_bytes() == previous and sorted(out.parent.iterdir()) == [out]


SLOW_WRITER = """
import sys, time
from InteractiveRefineLib import cli, geometry
original = geometry._write_array
def slow(array, matrix, path):
    original(array, matrix, path)
    print("temporary file written", file=sys.stderr, flush=True)
    time.sleep(120)
geometry._write_array = slow
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigterm_while_overwriting_keeps_the_previous_output(src, tiny_package_dir, tmp_path):
    """A real SIGTERM between writing the temporary file and renaming it."""
    import signal
    import subprocess
    import sys

    out, previous = _previous_output(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, "segment", "--ct", str(src.ct), "--pet", str(src.pet),
         "--model", str(tiny_package_dir), "--device", "cpu", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr.readline().strip() == "temporary file written"
        assert len(list(out.parent.iterdir())) == 2  # the previous output and the temporary file
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and stdout == ""
    assert stderr.strip() == "interactive-refine segment: interrupted; no output was written"
    assert out.read_bytes() == previous and sorted(out.parent.iterdir()) == [out]
