"""torchrun integration: process group setup, per-rank batch slices and reductions.

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the trainer runs DDP with NCCL on
GPUs and gloo on CPUs; otherwise everything here degrades to the single-process case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import BadInput
from ..device import resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)  # a clear error for a GPU that is not there
    if dev.type == "cuda" and str(device) in ("auto", "cuda"):  # one GPU per local process
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, dev)


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def local_slice(global_batch: int, ctx: DistContext) -> slice:
    """This rank's share of a global batch (the ranks' shares concatenate to the whole batch)."""
    if global_batch % ctx.world_size:
        raise BadInput(f"batch size {global_batch} is not divisible by the world size {ctx.world_size}")
    per_rank = global_batch // ctx.world_size
    return slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)


def all_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over all ranks."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()
