"""Streaming training data: images decoded per step by DataLoader workers, for sets too large for memory.

With ``decode="resize"`` only the storage differs from the in-memory path: the workers decode each file to the
recipe's geometry (:class:`~resnets.train.augment.RecipeTransforms`), and the trainer augments the batch as it
does a cached one. With ``decode="crop"`` the workers do the random crop, flip and policy themselves
(:class:`CropFiles`), each image under a seed its place in the epoch decides. Either way the batches are the same
epoch permutation, so neither the number of workers nor of processes changes what a run sees, and a resumed run
goes on as if never stopped. Bad files are dropped from their batch (``collate_images``) and reported by the
trainer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UnknownName
from ..choices import DATA_MODES
from ..data.images import ImageLoadError, ImageSample, collate_images
from ..data.source import ImageRef
from .augment import RecipeTransforms
from .policies import kept_rng, reseed

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


class EpochBatches(Sampler[list]):
    """This rank's share (``local``) of each global batch of an epoch, from step ``start`` on: dataset indices, or
    with ``seeds`` (one per place in the epoch's order) ``(index, seed, side)`` items for :class:`CropFiles`."""

    def __init__(self, n: int, batch_size: int, local: slice) -> None:
        self.n, self.batch_size, self.local = n, batch_size, local
        self.order, self.start, self.steps = torch.arange(n), 0, n // batch_size
        self.seeds: torch.Tensor | None = None
        self.side = 0

    def set_epoch(self, order: torch.Tensor, start: int, steps: int, seeds: torch.Tensor | None = None,
                  side: int = 0) -> None:
        """Call before iterating the loader: the epoch's permutation, the first step and the step count (and for
        crop decoding each place's seed and the epoch's training side)."""
        self.order, self.start, self.steps, self.seeds, self.side = order, start, steps, seeds, side

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list]:
        for i in range(self.start, self.steps):
            places = slice(i * self.batch_size, (i + 1) * self.batch_size)
            indices = self.order[places][self.local].tolist()
            if self.seeds is None:
                yield indices
            else:
                yield [(j, seed, self.side) for j, seed in zip(indices, self.seeds[places][self.local].tolist())]


class EvalBatches(Sampler[list[int]]):
    """Every ``world_size``-th image from ``rank`` on, in batches."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int) -> None:
        self.chunks = torch.arange(rank, n, world_size).split(batch_size)

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[list[int]]:
        for chunk in self.chunks:
            yield chunk.tolist()


CPU = torch.device("cpu")


class CropFiles(Dataset):
    """Training files to augmented uint8 crops (``decode="crop"``): item ``(index, seed, side)`` is image ``index``
    through :meth:`RecipeTransforms.crop_decoder` of ``side`` with torch's generator seeded by ``seed`` (and put
    back afterwards), so the pixels depend on the seed alone, whichever worker decodes them. A bad file gives an
    :class:`ImageSample` with its error, named."""

    def __init__(self, images: Sequence[ImageRef], transforms: RecipeTransforms) -> None:
        self.images, self.transforms = images, transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int, int]) -> ImageSample:
        index, seed, side = item
        ref = self.images[index]
        try:
            data = ref.read_bytes() if isinstance(ref, Path) else ref.encoded()
            with kept_rng(CPU):
                reseed(seed, CPU)
                return ImageSample(self.transforms.crop_decoder(side)(data), index, None)
        except OSError as e:
            return ImageSample(None, index, f"{ref}: cannot read file: {e.strerror or e}")
        except ImageLoadError as e:
            return ImageSample(None, index, f"{ref}: {e.reason}")


def make_loader(dataset: Dataset, batches: Sampler, workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader of ``ImageBatch``es over ``dataset`` (:class:`~resnets.data.images.ImageFiles` or
    :class:`CropFiles`).

    Workers live as long as one pass (an epoch's iterator): persistent workers outliving the loop
    are shut down by interpreter-exit hooks, a known source of hangs at the end of a run.
    """
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_images,
                      pin_memory=pin_memory)
