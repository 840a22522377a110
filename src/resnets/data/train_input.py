"""The training input pipeline at its cheapest: the crop decided before decoding, uint8 pixels per image, and the
float work done once per batch.

:class:`TrainDecode` runs in the DataLoader workers: a file (path or bytes) to the augmented crop as uint8 CHW
pixels (:class:`~resnets.data.decode.DecodeRandomResizedCrop` or the paper's scale augmentation, a horizontal flip,
then the recipe's per-image policy such as TrivialAugmentWide on the small crop). uint8 batches are a quarter of
float32's size to collate and move; :class:`BatchFinish` turns one into the model's input in one normalisation pass
(:meth:`resnets.preprocess.Preprocessing.normalize`) and applies RandomErasing per image, on whatever device the
batch is on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..preprocess import Preprocessing
from .decode import DecodeRandomResizedCrop, DecodeScaleCrop

#: Images normalised at once on the CPU.
CHUNK = 4


class TrainDecode:
    """A file to an augmented uint8 CHW crop: ``crop`` (default: RandomResizedCrop of ``size``, decoded at the size
    it needs), a horizontal flip with probability 0.5 when ``flip``, then ``augment`` on the PIL crop (e.g.
    ``torchvision.transforms.v2.TrivialAugmentWide()``)."""

    def __init__(self, size: int = 224, crop: DecodeRandomResizedCrop | DecodeScaleCrop | None = None,
                 flip: bool = True, augment: Callable[[Image.Image], Image.Image] | None = None) -> None:
        self.crop = crop if crop is not None else DecodeRandomResizedCrop(size)
        self.flip, self.augment = flip, augment

    def __call__(self, source: str | os.PathLike | bytes) -> torch.Tensor:
        img = self.crop(source)
        if self.flip and torch.rand(1).item() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.augment is not None:
            img = self.augment(img)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


class BatchFinish:
    """A uint8 (N, 3, H, W) batch to the model's input: normalised by ``mean``/``std`` (of 0..1 pixels) in one
    fused pass per :data:`CHUNK` images (a chunk's float32 stays in a CPU core's cache; a whole batch does not),
    then RandomErasing (torchvision's, probability ``erasing``) per image."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], erasing: float = 0.0) -> None:
        from torchvision.transforms import v2

        self.preprocessing = Preprocessing(tuple(mean), tuple(std))
        self.erase = v2.RandomErasing(erasing) if erasing > 0 else None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.device.type != "cpu":
            x = self.preprocessing.normalize(batch)
        else:
            x = torch.cat([self.preprocessing.normalize(chunk) for chunk in batch.split(CHUNK)])
        if self.erase is not None:
            for i in range(len(x)):
                x[i] = self.erase(x[i])
        return x
