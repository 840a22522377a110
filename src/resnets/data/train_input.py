"""The training input per image at its cheapest: the crop decided before decoding, uint8 pixels out.

:class:`TrainDecode` runs in the DataLoader workers (``resnets train --decode crop``): a file (path or bytes) to the
augmented crop as uint8 CHW pixels (:class:`~resnets.data.decode.DecodeRandomResizedCrop` or the paper's scale
augmentation, a horizontal flip, then the recipe's per-image policy such as TrivialAugmentWide on the small uint8
crop). uint8 batches are a quarter of float32's size to collate and move; the float work (normalisation, random
erasing) is done once per batch by the trainer, on whatever device the batch is on.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

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
        if self.augment is not None:
            x = self.augment(x)
        return x.contiguous()  # one layout for the batch: stacking then copies memory as it is
