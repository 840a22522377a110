"""Files to preprocessed batches: what predict, features, eval, explain, int8 calibration and benchmarks read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..preprocess import Preprocessing
from .images import ImageBatch, ImageFiles, collate_images

CALIBRATION_IMAGES = 128


def calibration_batches(images: Sequence[Path] | torch.Tensor, preprocessing: Preprocessing,
                        count: int = CALIBRATION_IMAGES, batch_size: int = 32) -> list[torch.Tensor]:
    """Up to ``count`` of the user's images, preprocessed, for int8 calibration (real data beats zeros)."""
    if isinstance(images, torch.Tensor):
        return [preprocessing(chunk) for chunk in images[:count].split(batch_size)]
    batches = [batch.images for batch, _ in file_batches(list(images)[:count], preprocessing, batch_size, workers=0)]
    return [b for b in batches if len(b)]


def file_batches(
    paths: Sequence[Path], preprocessing: Preprocessing, batch_size: int = 32, workers: int = 2,
    pin_memory: bool = False, min_side: int | None = None,
) -> Iterator[tuple[ImageBatch, Sequence[Path]]]:
    """Decoded, preprocessed batches of ``paths``; bad files come back in ``batch.errors``, never dropped.

    ``pin_memory`` (for a CUDA model): page-locked batches, copied to the GPU asynchronously.
    ``min_side``: reduced-scale JPEG decoding (see :func:`resnets.load_img`).
    """
    dataset = ImageFiles(paths, preprocessing, min_side=min_side)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_images,
        persistent_workers=False, prefetch_factor=4 if workers else None, pin_memory=pin_memory,
    )
    for batch in loader:
        yield batch, dataset.paths
