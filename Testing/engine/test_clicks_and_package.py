"""Click encoding, model packages and the engine's layering."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from InteractiveRefineLib.clicks import encode_guidance
from InteractiveRefineLib.errors import ModelPackageError
from InteractiveRefineLib.intensity import normalize_ct, normalize_pet
from InteractiveRefineLib.model_package import create_random_model_package, load_model_package
from scipy import ndimage

ENGINE = Path(__file__).resolve().parents[2] / "InteractiveRefine" / "InteractiveRefineLib"


def test_guidance_equals_monai_deepgrow_encoding():
    """1.0 at each click, Gaussian sigma 2 (truncate 4, zero padding), min-max to [0, 1]."""
    shape = (20, 24, 28)
    positives, negatives = [(5, 6, 7), (15, 20, 1)], [(10, 10, 10)]
    out = encode_guidance(shape, positives, negatives, sigma=2.0)
    for channel, clicks in zip(out, (positives, negatives)):
        impulses = np.zeros(shape, np.float64)
        for index in clicks:
            impulses[index] = 1.0
        smooth = ndimage.gaussian_filter(impulses, 2.0, mode="constant", truncate=4.0)
        expected = (smooth - smooth.min()) / (smooth.max() - smooth.min())
        np.testing.assert_allclose(channel, expected, atol=1e-5)
    assert out[0][positives[0]] == pytest.approx(1.0)


def test_intensity_presets():
    ct = np.array([-1000.0, -200.0, 0.0, 200.0, 3000.0])
    np.testing.assert_allclose(normalize_ct(ct, "2sicr"), [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(normalize_ct(ct, "clinical")[[0, -1]], [-0.98828, 0.96532], atol=1e-4)
    pet = np.array([0.0, 2.0, 4.0, 60.0])
    z = normalize_pet(pet, "2sicr")
    assert abs(z.mean()) < 1e-6 and z.std() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(normalize_pet(pet, "clinical"), [0, 0.04, 0.08, 1.0])


def test_tampered_weight_file_is_refused_naming_the_file(tiny_package_dir, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_package_dir, tmp_path / "pkg"))
    weights = copy / "refine_0.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match=re.escape(str(weights)) + ".*checksum|checksum.*refine_0"):
        load_model_package(copy)


def test_card_that_does_not_match_its_weights_is_refused(tiny_package_dir, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_package_dir, tmp_path / "pkg"))
    card = json.loads((copy / "model.json").read_text())
    card["network"]["channels"] = [8, 16, 32, 64]
    (copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match="does not match the initial network"):
        load_model_package(copy)


def test_missing_card_is_refused(tmp_path):
    with pytest.raises(ModelPackageError, match="model card not found"):
        load_model_package(tmp_path)


GTVP_GTVN_NAME = "interactive-refine-gtvp-gtvn"


def test_a_shipped_model_loads_by_its_name_and_a_folder_of_that_name_wins(tiny_package_dir, tmp_path,
                                                                          monkeypatch):
    """``--model gtvp_gtvn`` (or the module's Model field): a shipped package by its folder name;
    a folder of that name in the working directory is what the user meant; an unknown name is
    refused with the shipped names; an empty path is the default model."""
    import shutil

    from InteractiveRefineLib.model_package import DEFAULT_MODEL_DIR, SHIPPED_MODELS_DIR, resolve_model_dir

    monkeypatch.chdir(tmp_path)
    assert load_model_package("gtvp_gtvn").spec.name == GTVP_GTVN_NAME
    assert resolve_model_dir("gtvp_gtvn") == SHIPPED_MODELS_DIR / "gtvp_gtvn"
    assert resolve_model_dir("") == resolve_model_dir(None) == DEFAULT_MODEL_DIR
    names = "shipped models, by name: default, gtvp_gtvn, pet_region"
    with pytest.raises(ModelPackageError, match=names):
        load_model_package("gtvp_gtv")
    shutil.copytree(tiny_package_dir, tmp_path / "gtvp_gtvn")  # the user's own folder of that name
    assert load_model_package("gtvp_gtvn").path == Path("gtvp_gtvn")
    assert load_model_package("./gtvp_gtvn").spec.name != GTVP_GTVN_NAME


def test_ensemble_package_averages_members(tmp_path):
    from conftest import TINY_NETWORK, TINY_ROI

    path = create_random_model_package(tmp_path / "ens", network=TINY_NETWORK, roi_size_vox=TINY_ROI,
                                       ensemble=3)
    package = load_model_package(path)
    assert len(package.networks["initial"]) == 3 and len(package.networks["refine"]) == 3


def test_engine_never_imports_slicer_qt_vtk_or_ctk():
    pattern = re.compile(r"^\s*(import|from)\s+(slicer|qt|vtk|ctk)\b", re.MULTILINE)
    offenders = [p.name for p in ENGINE.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
