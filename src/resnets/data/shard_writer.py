"""``resnets data shards``: any data set :mod:`resnets.data.source` reads, written as WebDataset tar shards
(the layout :mod:`resnets.data.shards` describes and streams)."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import BadInput, MissingExtra
from ..progress import progress_bar
from .shards import FORMAT
from .source import ImageRef, read_split

_JPEG_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif"}


def _encoded(ref: ImageRef) -> tuple[bytes, str]:
    """An image's encoded bytes, as stored (never re-encoded), and the WebDataset extension that says how to decode
    them; decoded pixels (CIFAR batches) are stored as PNG, losslessly."""
    if isinstance(ref, Path):
        data = ref.read_bytes()
    elif hasattr(ref, "encoded"):
        data = ref.encoded()
    else:
        out = io.BytesIO()
        ref.load().save(out, "PNG")
        return out.getvalue(), "png"
    suffix = Path(str(ref)).suffix.lower()
    return data, "jpg" if suffix in _JPEG_SUFFIXES else suffix.lstrip(".")


def write_shards(source: str | os.PathLike, out: str | os.PathLike, shard_size: int, split: str = "train",
                 seed: int = 0, progress: bool = False) -> Path:
    """Write ``split`` of ``source`` (anything :func:`~resnets.data.source.read_split` reads) as WebDataset shards of
    ``shard_size`` images into ``out``, in an order shuffled by ``seed``; each shard and the sidecar are written
    atomically. Returns the sidecar's path. ``progress``: a bar (:func:`resnets.progress.progress_bar`). Needs
    ``webdataset`` (``resnets[wds]``)."""
    try:
        from webdataset import TarWriter
    except ImportError as e:
        raise MissingExtra("writing WebDataset shards needs webdataset: pip install 'resnets[wds]'") from e
    if shard_size < 1:
        raise BadInput(f"shard_size must be >= 1, got {shard_size}")
    images = read_split(source, split)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).tolist()
    out = Path(out)
    shards = []
    bar = progress_bar(len(order), "shards", progress, unit="img")
    for k in range(math.ceil(len(order) / shard_size)):
        name = f"{split}-{k:06d}.tar"
        chunk = order[k * shard_size:(k + 1) * shard_size]
        with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
            writer = TarWriter(f)
            for i in chunk:
                data, ext = _encoded(images.images[i])
                writer.write({"__key__": f"{i:09d}", ext: data, "cls": int(images.labels[i])})
            writer.close()
        shards.append({"name": name, "count": len(chunk)})
        bar.update(len(chunk))
    bar.close()
    meta = {"format": FORMAT, "split": split, "source": str(images.origin), "seed": seed, "images": len(order),
            "classes": list(images.classes), "shards": shards}
    path = out / f"{split}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return path
