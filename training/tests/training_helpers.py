"""Shared test material: a tiny phantom dataset, the tiny configuration and a trained initial run.

Built once per test session in a temporary folder (removed at exit), because several test
modules need them and training even a tiny network costs seconds on 2 CPU cores.
(A ``conftest.py`` here would shadow the repository's root ``conftest`` module.)
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import torch

TRAINING = Path(__file__).resolve().parents[1]
TINY_CONFIG = TRAINING / "configs" / "ci_tiny.json"
N_CASES = 5
SHAPE = 48


@functools.lru_cache(maxsize=None)
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="irt_tests_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def phantom_data() -> Path:
    """Five 48^3 phantoms (HECKTOR 2022 layout) from the training package's generator."""
    from interactive_refine_training import phantoms

    out = workdir() / "phantoms"
    phantoms.generate_dataset(out, N_CASES, seed=0, shape=(SHAPE,) * 3, spacing_mm=(1.0, 1.0, 1.0))
    return out


def cache_dir() -> Path:
    return workdir() / "cache"


def tiny_config(**sections) -> dict:
    """The ci_tiny configuration with section overrides, e.g. ``optimization={"max_epochs": 1}``."""
    from interactive_refine_training.config import load_config

    overrides = {"runtime": {"cache_dir": str(cache_dir())}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(TINY_CONFIG, overrides)


def train_cli(*args: str) -> None:
    """Run ``interactive-refine-train train`` in-process on the tiny configuration."""
    from interactive_refine_training.cli import main

    base = ["-q", "train", "--config", str(TINY_CONFIG), "--cache-dir", str(cache_dir())]
    assert main(base + list(args)) == 0


@functools.lru_cache(maxsize=None)
def initial_run() -> Path:
    out = workdir() / "runs" / "initial"
    train_cli("--stage", "initial", "--data", str(phantom_data()), "--out", str(out))
    return out


def ddp_worker(rank: int, world: int, port: int, stage: str, data: str, out: str, initial, result_dir: str):
    """One rank of a CPU (gloo) DDP run; saves its final weights as ``rank<r>.pt``."""
    from interactive_refine_training import distributed
    from interactive_refine_training.variants import TRAINERS

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    config = tiny_config(optimization={"max_epochs": 1, "iterations_per_epoch": 2})
    ctx = distributed.setup("cpu")
    try:
        trainer = TRAINERS[stage](config, data, out, initial=initial, ctx=ctx)
        trainer.run_training()
        torch.save(trainer.network.state_dict(), Path(result_dir) / f"rank{rank}.pt")
    finally:
        distributed.teardown(ctx)
