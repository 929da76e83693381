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


def hot_sphere_pair():
    """A PET/CT pair with a hot sphere: CT on a 1 x 1 x 2 mm grid (48 x 90 x 90), PET on a coarser
    grid shifted by half a voxel (the engine's fast-path and device-path tests)."""
    import numpy as np
    from InteractiveRefineLib.geometry import Volume

    rng = np.random.default_rng(0)
    shape = (48, 90, 90)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    sphere = ((k - 24) * 2) ** 2 + (j - 45) ** 2 + (i - 50) ** 2 < 12**2
    ct = np.where(sphere, 60.0, 20.0) + rng.normal(0, 20, shape)
    pet = np.where(sphere, 8.0, 1.0) + rng.normal(0, 0.2, shape)
    pet_matrix = np.diag([2.0, 2.0, 4.0, 1.0])
    pet_matrix[:3, 3] = [0.5, 0.5, 1.0]
    return (Volume.from_array(ct.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])),
            Volume.from_array(pet[::2, ::2, ::2].astype(np.float32), pet_matrix))


@pytest.fixture(scope="session")
def tiny_package_dir(tmp_path_factory) -> Path:
    """A model package with a tiny randomly initialised network (48^3 ROI)."""
    from InteractiveRefineLib.model_package import create_random_model_package

    return create_random_model_package(
        tmp_path_factory.mktemp("tiny_model"), network=TINY_NETWORK, roi_size_vox=TINY_ROI, seed=0
    )


@pytest.fixture(scope="session")
def two_class_package_dir(tmp_path_factory) -> Path:
    """A tiny random GTVp + GTVn package (two outputs, one sigmoid each)."""
    from InteractiveRefineLib.model_package import create_random_model_package

    return create_random_model_package(tmp_path_factory.mktemp("gtvp_gtvn"), network=TINY_NETWORK,
                                       roi_size_vox=TINY_ROI, seed=0, outputs=2)


@pytest.fixture(scope="session")
def tiny_package(tiny_package_dir):
    from InteractiveRefineLib.model_package import load_model_package

    return load_model_package(tiny_package_dir)


def unanchored_package(path: Path) -> Path:
    """A tiny package with an ``unanchored`` stage whose answers are plain to see: its refine
    member's output bias is +50 (everything is tumour), its unanchored member's -50 (nothing is)."""
    from InteractiveRefineLib.model_package import (
        create_random_model_package,
        load_model_package,
        save_model_package,
    )

    package = load_model_package(create_random_model_package(
        Path(path) / "random", network=TINY_NETWORK, roi_size_vox=TINY_ROI, seed=0))

    def biased(network, bias: float) -> dict:
        state = {k: v.clone() for k, v in network.state_dict().items()}
        state[[k for k in state if k.endswith("bias")][-1]].fill_(bias)  # the output convolution's
        return state

    refine = package.networks["refine"][0]
    states = {"initial": [package.networks["initial"][0].state_dict()],
              "refine": [biased(refine, 50.0)], "unanchored": [biased(refine, -50.0)]}
    return save_model_package(Path(path) / "unanchored", package.card, states)
