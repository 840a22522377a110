"""Streaming training data: images decoded per step by DataLoader workers, for sets too large for memory.

Only the storage differs from the in-memory path: the workers decode each file to the recipe's
geometry (:class:`~resnets.train.augment.RecipeTransforms`), and the trainer augments the batch as it
does a cached one. The batches are the same epoch permutation in both modes, so neither the number
of workers nor of processes changes what a run sees. Bad files are dropped from their batch
(``collate_images``) and reported by the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler

from ..errors import UnknownName
from ..choices import DATA_MODES
from ..data.images import ImageFiles, collate_images
from ..data.source import ImageList

AUTO_MEMORY_LIMIT = 2 * 1024**3  # bytes of decoded uint8 pixels below which "auto" keeps the data in memory


def choose_data_mode(mode: str, images: int, side: int) -> str:
    """``"memory"`` or ``"stream"``: ``auto`` streams when ``images`` decoded squares of ``side`` exceed 2 GiB."""
    if mode not in DATA_MODES:
        raise UnknownName(f"data_mode must be one of {', '.join(DATA_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "stream" if images * side**2 * 3 >= AUTO_MEMORY_LIMIT else "memory"


def epoch_order(n: int, epoch_seed: int) -> torch.Tensor:
    """The epoch's permutation of the training set, the same in both storage modes."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed))


class EpochBatches(Sampler[list[int]]):
    """This rank's share (``local``) of each global batch of an epoch, from step ``start`` on."""

    def __init__(self, n: int, batch_size: int, local: slice) -> None:
        self.n, self.batch_size, self.local = n, batch_size, local
        self.order, self.start, self.steps = torch.arange(n), 0, n // batch_size

    def set_epoch(self, order: torch.Tensor, start: int, steps: int) -> None:
        """Call before iterating the loader: the epoch's permutation, the first step and the step count."""
        self.order, self.start, self.steps = order, start, steps

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.steps):
            yield self.order[i * self.batch_size:(i + 1) * self.batch_size][self.local].tolist()


class EvalBatches(Sampler[list[int]]):
    """Every ``world_size``-th image from ``rank`` on, in batches."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int) -> None:
        self.chunks = torch.arange(rank, n, world_size).split(batch_size)

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[list[int]]:
        for chunk in self.chunks:
            yield chunk.tolist()


def make_loader(images: ImageList, transform: Callable[[Image.Image], torch.Tensor], batches: Sampler,
                workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader of ``ImageBatch``es over ``images``.

    Workers live as long as one pass (an epoch's iterator): persistent workers outliving the loop
    are shut down by interpreter-exit hooks, a known source of hangs at the end of a run.
    """
    return DataLoader(ImageFiles(images.images, transform), batch_sampler=batches, num_workers=workers,
                      collate_fn=collate_images, pin_memory=pin_memory)
