"""The training input pipeline at its cheapest: the crop decided before decoding, uint8 pixels per image, and the
float work done once per batch.

:class:`TrainDecode` runs in the DataLoader workers: a file (path or bytes) to the augmented crop as uint8 CHW
pixels (:class:`~resnets.data.decode.DecodeRandomResizedCrop` or the paper's scale augmentation, a horizontal flip,
then the recipe's per-image policy such as TrivialAugmentWide on the small uint8 crop). uint8 batches are a quarter of
float32's size to collate and move; :class:`BatchFinish` turns one into the model's input in one normalisation pass
(:meth:`resnets.preprocess.Preprocessing.normalize`) and applies RandomErasing per image, on whatever device the
batch is on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from ..preprocess import Preprocessing
from .decode import DecodeRandomResizedCrop, DecodeScaleCrop

class TrainDecode:
    """A file to an augmented uint8 CHW crop: ``crop`` (default: RandomResizedCrop of ``size``, decoded at the size
    it needs), a horizontal flip with probability 0.5 when ``flip``, then ``augment`` on the uint8 crop (e.g.
    ``torchvision.transforms.v2.TrivialAugmentWide()``)."""

    def __init__(self, size: int = 224, crop: DecodeRandomResizedCrop | DecodeScaleCrop | None = None,
                 flip: bool = True, augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.crop = crop if crop is not None else DecodeRandomResizedCrop(size)
        self.flip, self.augment = flip, augment

    def __call__(self, source: str | os.PathLike | bytes) -> torch.Tensor:
        x = self.crop(source)
        if self.flip and torch.rand(1).item() < 0.5:
            x = x.flip(-1)
        return self.augment(x) if self.augment is not None else x


class BatchFinish:
    """A uint8 (N, 3, H, W) batch to the model's input: normalised by ``mean``/``std`` (of 0..1 pixels) in one
    pass over the batch, then RandomErasing (torchvision's, probability ``erasing``) per image."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], erasing: float = 0.0) -> None:
        from torchvision.transforms import v2

        self.preprocessing = Preprocessing(tuple(mean), tuple(std))
        self.erase = v2.RandomErasing(erasing) if erasing > 0 else None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.preprocessing.normalize(batch)
        if self.erase is not None:
            for i in range(len(x)):
                x[i] = self.erase(x[i])
        return x
