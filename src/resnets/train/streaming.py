"""Streaming training data for image folders too large to hold decoded in memory.

Files are decoded per step by DataLoader workers and augmented with torchvision transforms
(RandomResizedCrop + flip for training, Resize + CenterCrop for evaluation). Every sample's random
crop is seeded by its position in the epoch, so the batches do not depend on the number of workers
or processes, and a resumed run skips the steps already done and continues as the uninterrupted one.
Bad files are dropped from their batch (``collate_images``) and reported by the trainer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms import v2

from ..data.cifar import split_source, labels_by_name
from ..data.images import ImageFiles, ImageSample, collate_images, find_images

DATA_MODES = ("auto", "memory", "stream")
AUTO_MEMORY_LIMIT = 2 * 1024**3  # bytes of decoded uint8 pixels below which "auto" keeps the data in memory
EVAL_RESIZE_RATIO = 256 / 224  # resize the short side to this times the crop, as the ImageNet recipe does


@dataclass
class ImageFolderList:
    """A labelled split of an image folder as file paths (decoded on demand), shaped like ``ImageTensors``."""

    paths: list[Path]
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageFolderList:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageFolderList([self.paths[i] for i in idx.tolist()], self.labels[idx], self.classes)

    def relabel(self, classes: Sequence[str]) -> ImageFolderList:
        """The same files labelled by their class names' places in ``classes`` (the training split's list)."""
        return ImageFolderList(self.paths, labels_by_name(self.labels, self.classes, classes), tuple(classes))


def image_folder_split(source: str | os.PathLike, split: str) -> ImageFolderList | None:
    """``<split>/<class>/*`` of the image folder ``source``; None when ``source`` is a tar or CIFAR python data."""
    origin = split_source(Path(source), split)
    if not origin.is_dir() or (origin / "data_batch_1").is_file():
        return None
    class_dirs = sorted(p for p in origin.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = find_images(class_dir)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise FileNotFoundError(f"{origin}: no images found for split '{split}' (expected <split>/<class>/<image>)")
    return ImageFolderList(paths, torch.tensor(labels, dtype=torch.long), tuple(p.name for p in class_dirs))


def choose_data_mode(mode: str, source: str | os.PathLike, image_size: int) -> str:
    """``"memory"`` or ``"stream"``: ``auto`` streams an image folder whose decoded training set exceeds 2 GiB."""
    if mode not in DATA_MODES:
        raise ValueError(f"data_mode must be one of {', '.join(DATA_MODES)}, got {mode!r}")
    if mode == "memory":
        return mode
    folder = image_folder_split(source, "train")
    if folder is None:
        if mode == "stream":
            raise ValueError(f"{source}: only image folders (train/<class>/*) can be streamed; tars and CIFAR "
                             "python data are loaded into memory (--data-mode memory)")
        return "memory"
    if mode == "stream":
        return mode
    return "stream" if len(folder) * image_size**2 * 3 >= AUTO_MEMORY_LIMIT else "memory"


def train_transform(size: int) -> v2.Compose:
    """RandomResizedCrop to ``size`` and a horizontal flip, uint8 CHW out."""
    return v2.Compose([v2.ToImage(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
                       v2.ToPureTensor()])


def eval_transform(size: int) -> v2.Compose:
    """Resize the short side to ``size * 256 / 224``, then CenterCrop ``size``; uint8 CHW out."""
    return v2.Compose([v2.ToImage(), v2.Resize(round(size * EVAL_RESIZE_RATIO), antialias=True),
                       v2.CenterCrop(size), v2.ToPureTensor()])


class SeededImageFiles(ImageFiles):
    """``ImageFiles`` whose items are ``(index, seed)``: the transform's randomness is seeded per sample.

    The seed fixes the crop whichever worker (or the main process) decodes the sample; the caller's
    random state is left untouched.
    """

    def __getitem__(self, key: tuple[int, int]) -> ImageSample:  # type: ignore[override]
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return super().__getitem__(index)


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """This rank's share of each global batch of an epoch, from step ``start`` on.

    The order is ``randperm(n)`` from a generator seeded by ``seed_of_epoch``, as in the in-memory
    path, and the per-sample crop seeds are drawn from the same generator after it.
    """

    def __init__(self, n: int, batch_size: int, local: slice) -> None:
        self.n, self.batch_size, self.local = n, batch_size, local
        self.epoch_seed, self.start, self.steps = 0, 0, n // batch_size

    def set_epoch(self, epoch_seed: int, start: int, steps: int) -> None:
        """Call before iterating the loader: the epoch's seed, the first step and the step count."""
        self.epoch_seed, self.start, self.steps = epoch_seed, start, steps

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.epoch_seed)
        perm = torch.randperm(self.n, generator=g)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        for i in range(self.start, self.steps):
            window = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield list(zip(perm[window][self.local].tolist(), seeds[window][self.local].tolist()))


class EvalBatches(Sampler[list[tuple[int, int]]]):
    """Every ``world_size``-th image from ``rank`` on, in batches; no randomness (seed 0)."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int) -> None:
        self.chunks = torch.arange(rank, n, world_size).split(batch_size)

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for chunk in self.chunks:
            yield [(i, 0) for i in chunk.tolist()]


def make_loader(files: ImageFolderList, transform: v2.Compose, batches: Sampler, workers: int,
                pin_memory: bool) -> DataLoader:
    """A DataLoader of ``ImageBatch``es over ``files``; workers persist across epochs."""
    return DataLoader(SeededImageFiles(files.paths, transform), batch_sampler=batches, num_workers=workers,
                      collate_fn=collate_images, pin_memory=pin_memory, persistent_workers=workers > 0)
