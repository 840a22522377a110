"""Repeated augmentation (Hoffer et al. 2020; DeiT; torchvision's ``--ra-sampler --ra-reps N``).

Each image of an epoch's permutation appears ``reps`` times in a row, and process ``r`` of ``R`` takes every
R-th of them, so the copies of an image land on different processes (or, in one process, in the same batch),
each with its own augmentation. The epoch keeps ``len // 256 * 256`` images in all, as torchvision's
``references/classification/sampler.py`` ``RASampler`` does; this module gives each process exactly that
sampler's indices, laid out as the global batches the trainer slices (``distributed.local_slice``).
"""

from __future__ import annotations

import math

import torch

from ..errors import BadInput


def repeated_steps(n: int, world_size: int, batch_size: int) -> int:
    """Steps per epoch: each process's ``RASampler.num_selected_samples`` in whole batches of its share."""
    steps = int(math.floor(n // 256 * 256 / world_size)) // (batch_size // world_size)
    if steps == 0:
        raise BadInput(f"repeated augmentation keeps {n // 256 * 256} of {n} images per epoch (whole multiples "
                         f"of 256, as torchvision's RASampler), fewer than one batch of {batch_size}: use "
                         "ra_reps=0, or more images")
    return steps


def repeated_order(n: int, reps: int, epoch_seed: int, world_size: int, batch_size: int) -> torch.Tensor:
    """An epoch's global order: global batch ``k``'s share of rank ``r`` is batch ``k`` of ``RASampler(rank=r,
    num_replicas=world_size, repetitions=reps)`` shuffled by ``epoch_seed``; the last incomplete batch left out."""
    if reps < 1:
        raise BadInput(f"ra_reps must be >= 1, got {reps}")
    local, steps = batch_size // world_size, repeated_steps(n, world_size, batch_size)
    num_samples = math.ceil(n * reps / world_size)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed)).repeat_interleave(reps)
    order = torch.cat([order, order[: num_samples * world_size - len(order)]])
    ranks = torch.stack([order[r::world_size][:steps * local] for r in range(world_size)])  # (R, steps * local)
    return ranks.view(world_size, steps, local).transpose(0, 1).reshape(-1)
