"""A labelled split decoded once into a cached uint8 NCHW tensor, for training that never waits on JPEGs.

Decoding runs in DataLoader workers through the fault-tolerant loader: bad images are named on
stderr and left out, the rest of the set is kept. The result is cached in ``$RESNETS_CACHE/data``
(default ``~/.cache/resnets/data``) keyed by the source's path, size and mtime and the transform, so a
second run starts at once.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..errors import BadInput
from ..atomic import atomic_path
from ..cache import cache_root
from ..preprocess import resize_crop
from .images import ImageFiles, collate_images
from .source import ImageList, labels_by_name, read_split


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

    ``transform_key`` names the transform in the cache key (e.g. its resize and crop sizes). The cache
    holds pixels only: labels and class names always come from ``images``.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"{_cache_key(images, transform_key)}.safetensors"
    if cache_file.is_file():
        pixels, index = _read_cache(cache_file)
        return ImageTensors(pixels, images.labels[index], images.classes)
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
        raise BadInput(f"{images.origin}: no readable image among {len(images)} files")
    index = torch.cat(kept)
    pixels = torch.cat(chunks)
    _write_cache(cache_file, pixels, index, images.origin)
    return ImageTensors(pixels, images.labels[index], images.classes)


def load_image_tensors(
    source: str | os.PathLike,
    split: str = "train",
    *,
    image_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
) -> ImageTensors:
    """``split`` of ``source`` (:func:`~resnets.data.source.read_split`) decoded at ``image_size`` (shorter
    side resized, centre crop: never squashed), cached."""
    return decode_split(read_split(source, split), resize_crop(image_size, image_size),
                        f"resize {image_size} crop {image_size}",
                        cache_dir=cache_dir)


def _cache_key(images: ImageList, transform_key: str) -> str:
    origin = images.origin
    names = hashlib.sha256("\n".join(map(str, images.images)).encode()).hexdigest()  # which images, in order
    stats: list = [str(origin.resolve()), names]
    if origin.is_dir():
        stats += sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in origin.iterdir())
    else:
        st = origin.stat()
        stats += [st.st_size, st.st_mtime_ns]
    return hashlib.sha256(repr((stats, transform_key)).encode()).hexdigest()[:24]


def _read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return tensors["images"], tensors["index"]


def _write_cache(path: Path, pixels: torch.Tensor, index: torch.Tensor, origin: Path) -> None:
    """The decoded pixels and, for each, its place in the image list (bad images are left out)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({"images": pixels.contiguous(), "index": index.contiguous()}, str(tmp),
                  metadata={"source": str(origin)})
