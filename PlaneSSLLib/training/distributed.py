"""Data-parallel training through PyTorch's own engine (``torchrun`` + DDP, ``env://`` init).

Launch with ``torchrun --nproc_per_node=N -m training_cli pretrain ...`` (one node) or with
``--nnodes=M --node_rank=K --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT`` on each machine;
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
and :func:`init_distributed` only reads them (``env://``), so single- and multi-node runs are the
same code. Backend: NCCL on CUDA, gloo on CPU. One process per GPU (``cuda:LOCAL_RANK``).

Rules: the configured batch size is the GLOBAL batch, split evenly over ranks; only rank 0 writes
(logs, checkpoints, exports); every rank reads the checkpoint on ``--resume`` (so multi-node runs
need the output directory on shared storage to resume).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "env_world",
    "init_distributed",
    "cleanup_distributed",
    "barrier",
    "all_reduce_sum",
    "shard_batches",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` without it)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when launched by torchrun; returns this process's :class:`DistInfo`.

    ``device`` is the resolved device type (``cpu`` or ``cuda``); on CUDA each process takes
    ``cuda:LOCAL_RANK``.
    """
    rank, world, local = env_world()
    if device.type == "cuda":
        device = torch.device("cuda", local % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    if world <= 1:
        return DistInfo(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    log.debug("rank %d/%d (local %d) joined the %s process group on %s", rank, world, local, backend, device)
    return DistInfo(rank, world, local, device, backend)


def cleanup_distributed() -> None:
    """Leave the process group (no-op outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks, in place, and return it (identity in a single process)."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shard_batches(order: Sequence[int], global_batch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's share of every global batch of an epoch's sample ``order``.

    The order is padded (wrapping around to its start) to a multiple of ``world`` so every rank
    takes the same number of steps with the same per-rank batch; global batch ``k`` is
    ``order[k*B:(k+1)*B]`` and rank ``r`` takes its ``r``-th contiguous slice, so concatenating
    the ranks' batches gives exactly the single-process batch. The last batch may be smaller (a
    multiple of ``world``).
    """
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} is not divisible by the world size {world}")
    order = list(order)
    if not order:
        return []
    pad = (-len(order)) % world
    order += (order * (pad // len(order) + 1))[:pad]
    batches = []
    for start in range(0, len(order), global_batch):
        chunk = order[start:start + global_batch]
        per_rank = len(chunk) // world
        batches.append(chunk[rank * per_rank:(rank + 1) * per_rank])
    return batches
