"""One home each: the data folder (``cases.find_data_dir``), the thread setting
(``runtime.threads_from_environment``), the small phantom (``phantom.make_phantom``) and the
demo's fallback to it when the sample case is absent."""
from __future__ import annotations

import json

import numpy as np
import pytest
from InteractiveRefineLib import cases
from InteractiveRefineLib.errors import InteractiveRefineError
from InteractiveRefineLib.phantom import make_phantom
from InteractiveRefineLib.runtime import threads_from_environment


@pytest.fixture
def no_default_data(monkeypatch, tmp_path):
    """No data folder anywhere: the repository and the working directory point into tmp_path."""
    monkeypatch.delenv(cases.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(cases, "REPO_DIR", tmp_path / "repo")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def test_find_data_dir_order_and_fallback(no_default_data, monkeypatch):
    tmp = no_default_data
    default = tmp / "shared" / "data"
    assert cases.find_data_dir() == default  # nothing exists: where it was looked for first
    env = tmp / "env_data"
    monkeypatch.setenv(cases.DATA_DIR_VARIABLE, str(env))
    assert cases.find_data_dir() == env
    (default / "case_a").mkdir(parents=True)
    assert cases.find_data_dir() == default  # the variable's folder is absent: the default exists
    env.mkdir()
    assert cases.find_data_dir() == env
    assert cases.find_data_dir(containing="case_a") == default
    explicit = tmp / "explicit"
    explicit.mkdir()
    assert cases.find_data_dir(explicit) == explicit
    assert cases.find_data_dir(str(explicit), containing="case_a") == default


def test_threads_from_environment():
    assert threads_from_environment({}) is None
    assert threads_from_environment({"INTERACTIVE_REFINE_THREADS": " 3 "}) == 3
    for bad in ("0", "-2", "many"):
        with pytest.raises(InteractiveRefineError, match="INTERACTIVE_REFINE_THREADS"):
            threads_from_environment({"INTERACTIVE_REFINE_THREADS": bad})


def test_phantom_is_a_small_deterministic_pet_ct_case():
    ct, pet, label = make_phantom(3)
    again = make_phantom(3)
    assert all(np.array_equal(a.array, b.array) for a, b in zip((ct, pet, label), again))
    assert ct.shape == label.shape == (40, 96, 96) and pet.shape == (20, 48, 48)
    assert np.allclose(ct.grid.spacing, (1, 1, 2)) and np.allclose(pet.grid.spacing, (2, 2, 4))
    assert np.allclose(ct.grid.center_ras(), 0) and np.allclose(pet.grid.center_ras(), 0)
    assert ct.ijk_to_ras[0, 0] < 0 and ct.ijk_to_ras[1, 1] < 0  # LPS-aligned, like a scan
    tumour = label.array.astype(bool)
    assert label.array.dtype == np.uint8 and 3000 < tumour.sum() < 8000  # a 15 mm sphere, 2 mm slices
    assert ct.array[tumour].mean() > ct.array[~tumour & (ct.array > -500)].mean()
    hottest = np.unravel_index(np.argmax(pet.array), pet.shape)
    centre_ras = ct.grid.index_to_ras(np.argwhere(tumour).mean(axis=0)[::-1])
    assert np.linalg.norm(pet.grid.index_to_ras(np.array(hottest[::-1], float)) - centre_ras) < 10


def test_demo_runs_on_the_engines_phantom_without_the_sample_case(no_default_data, tiny_package_dir):
    from InteractiveRefineLib.demo import run_demo

    out = no_default_data / "out"
    summary = run_demo(out, model=tiny_package_dir, device="cpu", seed=0)
    assert summary["case"] == "phantom" and len(summary["dice"]) == 6
    assert (out / "demo.png").stat().st_size > 10_000
    assert json.loads((out / "demo.json").read_text())["case"] == "phantom"
