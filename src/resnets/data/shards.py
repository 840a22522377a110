"""WebDataset tar shards: written from any data set :mod:`resnets.data.source` reads, streamed back for training.

A shard folder holds ``<split>-000000.tar``, ``<split>-000001.tar`` ... (each sample ``<key>.<ext>``, the image's
own encoded bytes, and ``<key>.cls``, its label as text: the WebDataset layout, readable by ``webdataset`` itself)
and ``<split>.json``, the sidecar that names the classes (in label order) and each shard's sample count. The
images are shuffled once when written, so a shard holds a mix of classes.

:class:`ShardStream` streams a split for training: each epoch (``set_epoch``) its shards in an order drawn from
``seed + epoch``, split over ranks and then DataLoader workers as webdataset's ``split_by_node`` and
``split_by_worker`` split them (``shards[rank::world_size][worker::num_workers]``), each shard's samples in an order
drawn from the seed, the epoch and the shard. The order is a function of those alone, so :meth:`ShardStream.resume`
can skip exactly the samples a rank had consumed mid-epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from .images import ImageLoadError

FORMAT = "resnets-webdataset-shards/1"


@dataclass(frozen=True)
class ShardIndex:
    """A split's shards as the sidecar lists them: paths, sample counts, class names in label order."""

    shards: tuple[Path, ...]
    counts: tuple[int, ...]
    classes: tuple[str, ...]

    @property
    def images(self) -> int:
        return sum(self.counts)


def sidecar(folder: str | os.PathLike, split: str) -> Path | None:
    """The sidecar of ``split``'s shards in ``folder`` (a ``<split>.json`` of this format), or None."""
    path = Path(folder) / f"{split}.json"
    if not path.is_file():
        return None
    try:
        return path if json.loads(path.read_text()).get("format") == FORMAT else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def read_index(path: str | os.PathLike) -> ShardIndex:
    """The :class:`ShardIndex` a sidecar describes; a shard it names that is missing is named."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
        shards = tuple(path.parent / s["name"] for s in meta["shards"])
        counts = tuple(int(s["count"]) for s in meta["shards"])
        classes = tuple(meta["classes"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{path}: not a shard sidecar written by 'resnets data shards': {e}") from e
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise BadInput(f"{path}: shard(s) missing: {', '.join(missing[:5])}")
    return ShardIndex(shards, counts, classes)


def shard_samples(path: Path) -> Iterator[tuple[str, bytes, str, int]]:
    """``(key, image bytes, extension, label)`` of one shard, in its stored order, read as one stream."""
    current: dict[str, Any] = {}
    key = None
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                stem, _, ext = base.partition(".")
                prefix = os.path.join(os.path.dirname(member.name), stem)
                if prefix != key:
                    if key is not None:
                        yield _sample(path, key, current)
                    key, current = prefix, {}
                current[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadInput(f"{path}: damaged or truncated shard: {e}") from None
    if key is not None:
        yield _sample(path, key, current)


def _sample(path: Path, key: str, fields: dict[str, bytes]) -> tuple[str, bytes, str, int]:
    images = [ext for ext in fields if ext != "cls"]
    if "cls" not in fields or len(images) != 1:
        raise BadInput(f"{path}: sample {key} needs one image and a .cls label, has {sorted(fields)}")
    return key, fields[images[0]], images[0], int(fields["cls"])


def _permutation(n: int, *seeds: int) -> list[int]:
    """A permutation of ``range(n)`` that depends on ``seeds`` alone (the same in every process and run)."""
    seed = int.from_bytes(hashlib.sha256(repr(seeds).encode()).digest()[:8], "little") >> 1
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


class ShardStream(torch.utils.data.IterableDataset):
    """A split's shards streamed in a seeded order, split over ranks and DataLoader workers, resumable mid-epoch.

    Yields ``(transform(image bytes), label)``; ``transform`` (default: the bytes as they are) takes the encoded
    image, e.g. :class:`~resnets.data.decode.DecodeRandomResizedCrop` composed with the rest of the augmentation.
    An image that cannot be decoded (:class:`~resnets.data.images.ImageLoadError`) is named in a warning and
    skipped. ``rank``/``world_size``: this process's place among the data-parallel processes.
    """

    def __init__(self, index: ShardIndex | str | os.PathLike, transform: Callable[[bytes], Any] | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.index = index if isinstance(index, ShardIndex) else read_index(index)
        if not 0 <= rank < world_size:
            raise BadInput(f"rank must lie in 0..world_size-1, got rank={rank}, world_size={world_size}")
        self.transform, self.seed, self.rank, self.world_size, self.shuffle = transform, seed, rank, world_size, shuffle
        self.epoch = 0
        self.skips: tuple[int, ...] = ()  # samples each worker's role skips (resume), indexed by role
        self.first = 0  # the role of DataLoader worker 0: whose turn came next where the epoch was resumed

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of ``epoch`` (as ``DistributedSampler.set_epoch``); clears a resume."""
        self.epoch, self.skips, self.first = epoch, (), 0

    def worker_shards(self, worker: int = 0, workers: int = 1) -> list[int]:
        """The shards (indices into ``index.shards``) this rank's ``worker`` of ``workers`` reads this epoch."""
        n = len(self.index.shards)
        order = _permutation(n, self.seed, self.epoch) if self.shuffle else list(range(n))
        return order[self.rank::self.world_size][worker::workers]

    def __len__(self) -> int:
        """Samples this rank reads in an epoch (ranks differ by at most a shard's worth)."""
        return sum(self.index.counts[s] for s in self.worker_shards())

    def resume(self, consumed: int, batch_size: int, workers: int) -> None:
        """Skip the first ``consumed`` samples this rank's DataLoader (``batch_size``, ``workers``, not dropping the
        last batch) gave in this epoch: its batches come from the workers in turn, a worker leaving the turn when
        its shards are done, so the samples each worker had given follow from the shard counts. The resumed
        DataLoader's worker 0 takes the part of the worker whose turn was next, so the rest comes in the same order
        as the uninterrupted epoch would have given it."""
        workers = max(workers, 1)
        sizes = [sum(self.index.counts[s] for s in self.worker_shards(w, workers)) for w in range(workers)]
        given = [0] * workers
        last = workers - 1
        while consumed > 0:
            active = [w for w in range(workers) if given[w] < sizes[w]]
            if not active:
                raise BadInput(f"consumed is more samples than this rank's epoch holds ({sum(sizes)})")
            for w in active:
                if consumed <= 0:
                    break
                take = min(batch_size, sizes[w] - given[w])
                if take > consumed:
                    raise BadInput(f"consumed must end at a batch of {batch_size}; {consumed} more is inside one")
                given[w] += take
                consumed -= take
                last = w
        self.skips, self.first = tuple(given), (last + 1) % workers

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        role = (worker + self.first) % workers
        skip = self.skips[role] if role < len(self.skips) else 0
        for s in self.worker_shards(role, workers):
            count = self.index.counts[s]
            if skip >= count:
                skip -= count
                continue
            samples = list(shard_samples(self.index.shards[s]))
            order = _permutation(len(samples), self.seed, self.epoch, s) if self.shuffle else range(len(samples))
            for i in list(order)[skip:]:
                key, data, _, label = samples[i]
                try:
                    yield (data if self.transform is None else self.transform(data)), label
                except ImageLoadError as e:
                    warnings.warn(f"skipping {self.index.shards[s]}:{key}: {e.reason}", stacklevel=2)
            skip = 0
