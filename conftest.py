"""Shared pytest fixtures: the real-data path setting and tiny model packages.

Real data is read from the engine's data folder (``InteractiveRefineLib.cases.find_data_dir``:
``$INTERACTIVE_REFINE_DATA``, default ``../shared/data`` beside the repository). Tests that need it
skip with a message saying where it was looked for.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from InteractiveRefineLib.cases import find_data_dir
from InteractiveRefineLib.networks import TINY_NETWORK, TINY_ROI

REPO = Path(__file__).resolve().parent
DATA_DIR = find_data_dir()
#: ``TINY_NETWORK`` and ``TINY_ROI`` (the engine's) are imported above for the tests.

def data_path(*parts: str) -> Path:
    """Path of a file under the real-data folder; skips the test when it is absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data not found at {path} (set INTERACTIVE_REFINE_DATA to the shared/data folder)"
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data folder {DATA_DIR} is absent (set INTERACTIVE_REFINE_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_package_dir(tmp_path_factory) -> Path:
    """A model package with a tiny randomly initialised network (48^3 ROI)."""
    from InteractiveRefineLib.model_package import create_random_model_package

    return create_random_model_package(
        tmp_path_factory.mktemp("tiny_model"), network=TINY_NETWORK, roi_size_vox=TINY_ROI, seed=0
    )


@pytest.fixture(scope="session")
def tiny_package(tiny_package_dir):
    from InteractiveRefineLib.model_package import load_model_package

    return load_model_package(tiny_package_dir)
