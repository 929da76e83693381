"""Resumable checkpoints and CPU (gloo) DDP on the tiny setup."""
from __future__ import annotations

import socket
import time

import pytest
import torch
from interactive_refine_training.checkpoint import LATEST, load_checkpoint
from training_helpers import ddp_worker, initial_run, phantom_data, train_cli, workdir


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("augment_on", ["device", "workers"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(augment_on):
    """Also with the augmentation in 2 loader processes: per-sample seeds make it order-free."""
    data, runs = str(phantom_data()), workdir() / f"resume_{augment_on}"
    workers = "2" if augment_on == "workers" else "0"
    common = ["--stage", "initial", "--data", data, "--max-epochs", "2", "--workers", workers,
              "--set", f"runtime.augment_on={augment_on}"]
    train_cli(*common, "--out", str(runs / "straight"))
    train_cli(*common, "--out", str(runs / "split"), "--stop-after-epochs", "1")
    stopped = load_checkpoint(runs / "split" / LATEST)
    assert stopped["epoch"] == 1
    train_cli(*common, "--out", str(runs / "split"), "--resume")
    straight = load_checkpoint(runs / "straight" / LATEST)
    resumed = load_checkpoint(runs / "split" / LATEST)
    assert resumed["epoch"] == straight["epoch"] == 2
    assert _same_weights(resumed["model"], straight["model"])
    assert resumed["optimizer"]["state"][0]["step"] == straight["optimizer"]["state"][0]["step"]
    assert resumed["scheduler"] == straight["scheduler"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_gives_identical_weights_on_both_ranks(tmp_path):
    """Refine stage: several backward passes per iteration, a random click count shared by the ranks."""
    args = (2, _free_port(), "refine", str(phantom_data()), str(tmp_path / "run"), str(initial_run()),
            str(tmp_path))
    context = torch.multiprocessing.start_processes(ddp_worker, args=args, nprocs=2, join=False,
                                                    start_method="spawn")
    deadline = time.monotonic() + 180
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("DDP run did not finish within 180 s (ranks out of step?)")
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert _same_weights(rank0, rank1)
    before = load_checkpoint(tmp_path / "run" / LATEST)["model"]
    assert _same_weights(before, rank0)  # rank 0 wrote the checkpoint of the trained weights
