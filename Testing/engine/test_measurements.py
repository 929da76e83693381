"""Lesion measurements (:mod:`InteractiveRefineLib.measurements`) and the session log."""
from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
from InteractiveRefineLib.geometry import Volume
from InteractiveRefineLib.measurements import PEAK_RADIUS_MM, measure, measure_classes, sphere_kernel
from InteractiveRefineLib.session_log import SessionLog, append_row


def _grid_volume(array, spacing):
    return Volume.from_array(np.asarray(array, dtype=np.float32), np.diag(list(spacing) + [1.0]))


def test_the_peak_sphere_holds_one_millilitre():
    assert 4 / 3 * np.pi * PEAK_RADIUS_MM ** 3 == pytest.approx(1000.0)
    kernel = sphere_kernel((4.0, 4.0, 3.0))
    assert kernel.sum() == pytest.approx(1.0)
    # Before normalising, the weights are the fractions of each voxel inside (1 at the centre):
    # on 1 mm voxels they add up to ~1000 voxels, 1 mL.
    fine = sphere_kernel((1.0, 1.0, 1.0))
    assert fine.sum() / fine.max() == pytest.approx(1000.0, rel=0.01)


def test_measurements_of_a_hot_cube_in_a_warm_background():
    pet = np.full((30, 30, 30), 2.0)
    pet[10:20, 10:20, 10:20] = 10.0  # a 1 mL sphere fits inside this 40 mm cube of 2 mm voxels
    pet[15, 15, 15] = 12.0
    pet_volume = _grid_volume(pet, (2.0, 2.0, 2.0))
    ct_volume = _grid_volume(np.zeros((60, 60, 60)), (1.0, 1.0, 1.0))
    # A contour a little larger than the cube: the background rim is below 41 % of SUVmax.
    mask = np.zeros((60, 60, 60), bool)
    mask[17:43, 17:43, 17:43] = True
    values = measure(mask, ct_volume.grid, pet_volume)
    assert values["volume_ml"] == pytest.approx(26 ** 3 / 1000)
    assert values["suv_max"] == pytest.approx(12.0)
    assert 10.0 < values["suv_peak"] < 10.1  # the 1 mL mean around the hot voxel
    assert values["mtv_threshold"] == pytest.approx(0.41 * 12.0)
    inside = values["mtv_ml"]
    assert 7.5 < inside < 9.5  # about the 8 mL cube (linear interpolation blurs its edge)
    assert 0.41 * 12.0 * inside < values["tlg"] < 10.1 * inside  # MTV x its mean SUV
    assert values["suv_mean"] < 10.0
    absolute = measure(mask, ct_volume.grid, pet_volume, mtv_absolute=1.0)
    assert absolute["mtv_ml"] == pytest.approx(values["volume_ml"])
    assert absolute["mtv_definition"] == "SUV >= 1"


def test_classes_and_missing_pet():
    ct = _grid_volume(np.zeros((10, 10, 10)), (1.0, 1.0, 1.0))
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:4, 2:4, 2:4] = 2
    out = measure_classes(labels, ct.grid, None)
    assert out["GTVp"]["volume_ml"] == 0 and out["GTVn"]["volume_ml"] == pytest.approx(0.008)
    assert out["GTVn"]["suv_max"] is None


def test_session_log_counts_clicks_by_kind_undos_and_time(tmp_path):
    ticks = iter([0.0, 42.5])
    log = SessionLog("case1", model="m", model_version="1", device="cpu", clock=lambda: next(ticks))
    plus = SimpleNamespace(positive=True, kind="point")
    minus = SimpleNamespace(positive=False, kind="point")
    threshold = SimpleNamespace(positive=True, kind="threshold")
    log.observe([plus])
    log.observe([plus, minus])
    log.observe([plus], "undo")
    log.observe([plus, threshold])
    log.observe([], "reset")
    log.accept(12.3456)
    append_row(tmp_path / "log.csv", log.row())
    append_row(tmp_path / "log.csv", log.row())
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 2
    row = rows[0]
    assert (row["clicks_positive"], row["clicks_negative"], row["clicks_threshold"]) == ("1", "1", "1")
    assert (row["clicks_total"], row["undos"], row["resets"]) == ("3", "1", "1")
    assert (row["seconds_to_accept"], row["volume_ml"], row["device"]) == ("42.5", "12.346", "cpu")
