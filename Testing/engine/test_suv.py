"""SUVbw from PET DICOM tags (:mod:`InteractiveRefineLib.suv`): eight real vendor series, the raw
STS_001 PET against its SUV image, the calculate-suv synthetic branches, and every refusal."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from InteractiveRefineLib.suv import SuvError, suv_factors
from pydicom.dataset import Dataset

from conftest import data_path

#: cornerstonejs/calculate-suv's published SUVbw factors (suv_reference/PROVENANCE.md).
EXPECTED = {
    "SIEMENS": 0.00042748316187197236,
    "GE_MEDICAL_AND_BQML": 0.0005367387681819742,
    "PHILIPS_BQML": 0.0007463747013889488,
    "PHILIPS_CNTS_AND_BQML_SUV": 0.000551,
    "PHILIPS_CNTS_AND_SUV": 0.000728,
    "BQML_AC_DT_lessThan_S_DT_SIEMENS": 0.0004069156854009332,
    "CPS_AND_BQML_AC_DT_-_S_DT": 0.00026503312764157046,
    "RADIOPHARM_DATETIME_UNDEFINED": 0.0003721089202818729,
}
RADIOPHARMACEUTICAL = ("RadionuclideTotalDose", "RadionuclideHalfLife", "RadiopharmaceuticalStartTime",
                       "RadiopharmaceuticalStartDateTime")
PHILIPS = {"SUVScaleFactor": 0x00, "ActivityConcentrationScaleFactor": 0x09}
RAW_PET = ("sts_petct", "dicom_raw_pet", "STS_001", "FDG_PET", "image")


def dataset(tags: dict) -> Dataset:
    """A pydicom instance from calculate-suv's JSON (Philips private tags in group 7053)."""
    ds, info = Dataset(), Dataset()
    for keyword, value in tags.items():
        if keyword == "PhilipsPETPrivateGroup":
            if value:
                block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
                for name, offset in PHILIPS.items():
                    if name in value:
                        block.add_new(offset, "DS", value[name])
        elif keyword in RADIOPHARMACEUTICAL:
            setattr(info, keyword, value)
        else:
            setattr(ds, keyword, value)
    ds.RadiopharmaceuticalInformationSequence = [info]
    return ds


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_factor_equals_the_published_value_of_eight_vendor_series(name):
    instances = json.loads(data_path("suv_reference", "calculate_suv_metadata",
                                     f"{name}-instances.json").read_text())
    result = suv_factors([dataset(tags) for tags in instances])
    assert abs(result.factor - EXPECTED[name]) < 1e-6  # the source's own tolerance
    assert result.factor == pytest.approx(EXPECTED[name], rel=1e-9)
    assert result.warnings == []


def test_raw_sts_pet_dicom_matches_the_ibsi_suv_image():
    from InteractiveRefineLib.dicom_series import read_pet_series
    from InteractiveRefineLib.geometry import read_volume, resample

    suv, info = read_pet_series(data_path(*RAW_PET))
    assert (info.units, info.decay_correction, info.delay_s) == ("BQML", "START", 2711.0)
    assert 1.0 < float(suv.array.max()) < 100.0  # whole-FOV SUVmax 66.5
    reference = read_volume(data_path("sts_petct", "hecktor_layout", "STS_001", "STS_001__PT.nii.gz"))
    converted = resample(suv.array, suv.grid, reference.grid, order=1)  # an integer voxel shift
    body = reference.array > 0.5
    assert np.median(converted[body] / reference.array[body]) == pytest.approx(1.0, abs=5e-4)
    assert np.abs(converted - reference.array).max() < 0.002


# calculate-suv's synthetic cases: ADMIN, weight 100 kg, dose 100 Bq (implausible: overridden),
# half-life 10 s, injection = series = acquisition, so the BQML factor is 100000 / 100 = 1000.
def synthetic(**changes) -> Dataset:
    ds = dataset({
        "Units": "BQML", "DecayCorrection": "ADMIN", "CorrectedImage": ["ATTN", "DECY"],
        "PatientWeight": 100, "SeriesDate": "20201023", "SeriesTime": "095417",
        "AcquisitionDate": "20201023", "AcquisitionTime": "095417", "RadionuclideTotalDose": 100,
        "RadionuclideHalfLife": 10, "RadiopharmaceuticalStartDateTime": "20201023095417",
        "PhilipsPETPrivateGroup": changes.pop("philips", {}),
    })
    for keyword, value in changes.items():
        if keyword in RADIOPHARMACEUTICAL:
            setattr(ds.RadiopharmaceuticalInformationSequence[0], keyword, value)
        elif value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("changes, expected", [
    ({}, 1000.0),
    ({"Units": "GML"}, 1.0),
    ({"Units": "CNTS", "philips": {"SUVScaleFactor": "0.000551"}}, 0.000551),
    ({"Units": "CNTS", "philips": {"SUVScaleFactor": "0", "ActivityConcentrationScaleFactor": "1.602563"}},
     1602.563),
    ({"PatientWeight": 75}, 750.0),
])
def test_synthetic_branches(changes, expected):
    result = suv_factors([synthetic(**changes)], allow_implausible=True)
    assert result.factor == pytest.approx(expected, rel=1e-12)
    dose_used = "BQML" in result.method  # the 100 Bq dose is implausible: a warning, as asked
    assert any("RadionuclideTotalDose" in w for w in result.warnings) == dose_used


def test_decay_none_decays_to_each_instance_and_start_to_the_scan():
    start = synthetic(DecayCorrection="START", RadionuclideTotalDose=4e8, RadionuclideHalfLife=6588,
                      RadiopharmaceuticalStartDateTime="20201023085417")
    assert suv_factors([start]).factor == pytest.approx(100000 / (4e8 * 2 ** (-3600 / 6588)), rel=1e-12)
    first = synthetic(DecayCorrection="NONE", CorrectedImage=["ATTN"], RadionuclideTotalDose=4e8,
                      RadionuclideHalfLife=6588, RadiopharmaceuticalStartDateTime="20201023085417")
    second = copy.deepcopy(first)
    second.AcquisitionTime = "102417"  # 30 min later: less activity left, a larger factor
    factors = suv_factors([first, second]).factors
    assert factors[1] / factors[0] == pytest.approx(2 ** (1800 / 6588), rel=1e-12)


@pytest.mark.parametrize("changes, tag", [
    ({"PatientWeight": None}, "PatientWeight (0010,1030)"),
    ({"PatientWeight": 0}, "PatientWeight (0010,1030)"),
    ({"RadionuclideTotalDose": 0}, "RadionuclideTotalDose (0018,1074)"),
    ({"RadionuclideHalfLife": 0}, "RadionuclideHalfLife (0018,1075)"),
    ({"Units": "PROPCPS"}, "Units (0054,1001)"),
    ({"DecayCorrection": "WHATEVER"}, "DecayCorrection (0054,1102)"),
    ({"CorrectedImage": ["DECY"]}, "CorrectedImage (0028,0051)"),
    ({"Units": "CNTS"}, "(7053,1000)"),
    ({"RadiopharmaceuticalStartDateTime": "20201023105417"}, "injection after acquisition"),
    ({"SeriesTime": None}, "SeriesTime (0008,0031)"),
])
def test_a_missing_or_impossible_tag_is_refused_by_name(changes, tag):
    with pytest.raises(SuvError, match=tag.replace("(", r"\(").replace(")", r"\)")):
        suv_factors([synthetic(**changes)], allow_implausible=True)


def test_implausible_values_are_refused_unless_overridden():
    plausible = dict(RadionuclideTotalDose=4e8)
    with pytest.raises(SuvError, match="PatientWeight .* 900 kg .*allow-implausible-suv"):
        suv_factors([synthetic(PatientWeight=900, **plausible)])
    with pytest.raises(SuvError, match=r"RadionuclideTotalDose \(0018,1074\) = 370 Bq"):
        suv_factors([synthetic(RadionuclideTotalDose=370)])  # MBq written as Bq
    result = suv_factors([synthetic(PatientWeight=900, **plausible)], allow_implausible=True)
    assert result.factor == pytest.approx(900000 / 4e8) and "900 kg" in result.warnings[0]
    other = synthetic(**plausible)
    other.PatientWeight = 80
    with pytest.raises(SuvError, match="PatientWeight differs between the instances"):
        suv_factors([synthetic(**plausible), other])


def test_whole_series_suvmax_outside_1_to_100_is_refused_and_overridable():
    from InteractiveRefineLib.suv import SuvFactors, check_suv_range

    info = SuvFactors(np.ones(1), "BQML", "START", "BQML decayed to the scan start")
    with pytest.raises(SuvError, match="SUVmax of the series = 4e\\+03"):
        check_suv_range(np.array([4000.0]), info)
    check_suv_range(np.array([4000.0]), info, allow_implausible=True)
    assert "SUVmax" in info.warnings[0]
