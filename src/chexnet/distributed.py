"""One process or many: the train stage runs unchanged alone or under ``torchrun``.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; with them the stage joins a process group
(NCCL on CUDA, gloo on CPU), each process drives one device, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from chexnet.model import resolve_device


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Context:
    """Join the process group when launched by torchrun with more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device)
    if chosen.type == "cuda" and world_size > 1:
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def sum_all(ctx: Context, *values: float) -> list[float]:
    """Sum numbers over all processes (train loss totals and counts)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_rows(ctx: Context, rows: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
    """Reassemble a per-sample tensor split over processes by a DistributedSampler, in dataset order.

    Each process holds ``rows[i]`` for dataset position ``index[i]`` (the sampler pads by repeating
    samples, so some positions arrive twice; either copy is the same).
    """
    if not ctx.distributed:
        out = torch.empty((total, *rows.shape[1:]), dtype=rows.dtype)
        out[index] = rows
        return out
    rows, index = rows.to(ctx.device), index.to(ctx.device)
    all_rows = [torch.empty_like(rows) for _ in range(ctx.world_size)]
    all_index = [torch.empty_like(index) for _ in range(ctx.world_size)]
    dist.all_gather(all_rows, rows)
    dist.all_gather(all_index, index)
    out = torch.empty((total, *rows.shape[1:]), dtype=rows.dtype)
    out[torch.cat(all_index).cpu()] = torch.cat(all_rows).cpu()
    return out
