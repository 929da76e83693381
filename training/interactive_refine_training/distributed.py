"""One process or ``torchrun`` DDP: device choice, process group, and the few collectives needed.

``torchrun --nproc_per_node N`` (optionally ``--nnodes``) sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; the process group uses NCCL on CUDA and Gloo on CPU. Rank 0 alone writes
checkpoints, logs and TensorBoard events.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def choose_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is there, else CPU; ``cuda`` without CUDA fails."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda") or requested == "auto":
        if torch.cuda.is_available():
            index = local_rank if requested in ("auto", "cuda") else torch.device(requested).index
            return torch.device("cuda", index or 0)
        if requested != "auto":
            raise ValueError(f"device {requested!r} requested but CUDA is not available")
        return torch.device("cpu")
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {requested!r}")


def setup(requested_device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(requested_device, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        # Rank 0 may build the preprocessing cache while the others wait: allow an hour.
        torch.distributed.init_process_group(
            backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=60)
        )
        logger.info("rank %d/%d joined the %s process group on %s", rank, world, backend, device)
    return DistContext(rank, world, local_rank, device)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.device.type == "cuda":
            torch.distributed.barrier(device_ids=[ctx.device.index])
        else:
            torch.distributed.barrier()


def sum_across(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    if ctx.distributed:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor.cpu().tolist()


def any_across(ctx: DistContext, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not ctx.distributed:
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item() > 0)
