"""Calibration of the uncertainty: expected calibration error and error-detection AUC."""
from __future__ import annotations

import numpy as np
import pytest
from InteractiveRefineLib.uncertainty import (
    calibration,
    error_detection_auc,
    expected_calibration_error,
    predictive_entropy,
)


def _calibrated(rng):
    """Per bin centre q, 1000 voxels of probability q of which exactly round(1000 q) are tumour."""
    probability, truth = [], []
    for q in (np.arange(15) + 0.5) / 15:
        n_true = int(round(1000 * q))
        probability += [q] * 1000
        truth += [1] * n_true + [0] * (1000 - n_true)
    order = rng.permutation(len(probability))
    return np.array(probability)[order], np.array(truth)[order]


def test_ece_is_zero_when_calibrated_and_high_when_confidently_wrong():
    probability, truth = _calibrated(np.random.default_rng(0))
    assert expected_calibration_error(probability, truth) == pytest.approx(0.0, abs=1e-3)
    confident_wrong = np.full(1000, 0.99)
    assert expected_calibration_error(confident_wrong, np.zeros(1000)) == pytest.approx(0.99)
    certain_right = np.r_[np.ones(10), np.zeros(90)]
    assert expected_calibration_error(certain_right, certain_right.astype(bool)) == 0.0
    # 15 equal-width bins: 0.5 and 0.52 share a bin (their gaps cancel), 0.5 and 0.54 do not
    assert expected_calibration_error([0.5, 0.52], [0, 1]) == pytest.approx(0.01)
    assert expected_calibration_error([0.5, 0.54], [0, 1]) == pytest.approx(0.48)


def test_auc_is_one_when_the_uncertain_voxels_hold_exactly_the_errors():
    errors = np.zeros((4, 5, 6), bool)
    errors[1, 2, 3:] = True
    entropy = np.where(errors, 0.6, 0.1)
    assert error_detection_auc(entropy, errors) == 1.0
    assert error_detection_auc(-entropy, errors) == 0.0
    assert error_detection_auc(np.ones_like(entropy), errors) == 0.5  # ties: chance
    assert error_detection_auc(entropy, np.zeros_like(errors)) is None  # no error: undefined
    assert error_detection_auc(entropy, errors, mask=errors) is None  # only errors left


def test_calibration_of_an_estimate_against_the_truth():
    truth = np.zeros((8, 8, 8), bool)
    truth[2:6, 2:6, 2:6] = True
    mean = np.where(truth, 0.9, 0.05).astype(np.float32)
    mean[2, 2, 2], mean[0, 0, 0] = 0.45, 0.7  # one missed tumour voxel, one false positive
    result = calibration(mean, predictive_entropy(mean), truth)
    assert result["error_voxels"] == 2 and result["voxels"] == truth.size
    assert result["error_auc"] == 1.0  # the two errors are the two most uncertain voxels
    assert 0.0 < result["ece"] < 0.1
    inside = np.ones_like(truth)
    inside[0] = False  # voxels outside the CT do not count
    assert calibration(mean, predictive_entropy(mean), truth, mask=inside)["error_voxels"] == 1


@pytest.mark.parametrize("call, message", [
    (lambda: expected_calibration_error([0.5, 1.2], [0, 1]), r"in \[0, 1\]"),
    (lambda: expected_calibration_error([0.5, np.nan], [0, 1]), r"in \[0, 1\]"),
    (lambda: expected_calibration_error([0.5], [0, 1]), "truth has shape"),
    (lambda: expected_calibration_error([0.5], [1], bins=0), "bins must be a positive integer"),
    (lambda: expected_calibration_error([], []), "no voxels"),
    (lambda: error_detection_auc([0.1, np.inf], [True, False]), "finite"),
    (lambda: calibration(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 2))), "entropy has shape"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
