"""A labelled split decoded once into a cached uint8 NCHW tensor, for training that never waits on JPEGs.

Decoding runs in DataLoader workers through the fault-tolerant loader: bad images are named on
stderr and left out, the rest of the set is kept. The result is cached in ``$RESNETS_CACHE/data``
(default ``~/.cache/resnets/data``) keyed by the source's path, size and mtime and the transform, so a
second run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..atomic import atomic_path
from ..cache import cache_root
from .images import ImageFiles, collate_images
from .source import ImageList, labels_by_name


@dataclass
class ImageTensors:
    """A labelled image set held in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageTensors:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensors(self.images[idx], self.labels[idx], self.classes)

    def relabel(self, classes: Sequence[str]) -> ImageTensors:
        """The same images labelled by their class names' places in ``classes`` (the training split's list)."""
        return ImageTensors(self.images, labels_by_name(self.labels, self.classes, classes), tuple(classes))


def default_cache_dir() -> Path:
    return cache_root() / "data"


def decode_split(
    images: ImageList,
    transform: Callable[[Image.Image], torch.Tensor],
    transform_key: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    batch_size: int = 256,
) -> ImageTensors:
    """``images`` through ``transform`` (uint8 CHW of one size) as tensors, decoded only the first time.

    ``transform_key`` names the transform in the cache key (e.g. its resize and crop sizes).
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"{_cache_key(images, transform_key)}.safetensors"
    if cache_file.is_file():
        return _read_cache(cache_file)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    files = ImageFiles(images.images, transform)
    loader = torch.utils.data.DataLoader(files, batch_size=batch_size, num_workers=workers if len(files) > 256 else 0,
                                         collate_fn=collate_images)
    chunks, kept, bad = [], [], 0
    for batch in loader:
        for _, message in batch.errors:
            bad += 1
            print(f"resnets: skipping a bad image ({bad} so far): {message}", file=sys.stderr)
        if len(batch.indices):
            chunks.append(batch.images)
            kept.append(batch.indices)
    if not chunks:
        raise ValueError(f"{images.origin}: no readable image among {len(images)} files")
    index = torch.cat(kept)
    data = ImageTensors(torch.cat(chunks), images.labels[index], images.classes)
    _write_cache(cache_file, data, images.origin)
    return data


def _cache_key(images: ImageList, transform_key: str) -> str:
    origin = images.origin
    stats: list = [str(origin.resolve()), len(images)]
    if origin.is_dir():
        stats += sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in origin.iterdir())
    else:
        st = origin.stat()
        stats += [st.st_size, st.st_mtime_ns]
    return hashlib.sha256(repr((stats, transform_key)).encode()).hexdigest()[:24]


def _read_cache(path: Path) -> ImageTensors:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        classes = tuple(json.loads(f.metadata()["classes"]))
    tensors = load_file(str(path))
    return ImageTensors(tensors["images"], tensors["labels"], classes)


def _write_cache(path: Path, data: ImageTensors, origin: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"images": data.images.contiguous(), "labels": data.labels.contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"classes": json.dumps(list(data.classes)), "source": str(origin)})
