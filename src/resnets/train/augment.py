"""What a recipe does to images: how each split is decoded, and the batch augmentation, for both storage modes.

The recipe owns the transforms, not the storage mode. Images are decoded to a fixed geometry (resize
the shorter side, centre crop) either once into memory or per step by DataLoader workers; the same
random augmentation is then drawn for the global batch from one checkpointed generator and applied
on the batch tensor. So a cached and a streamed run see the same pixels, and a resumed run, or one on
another number of processes, the same batches. Evaluation is the decode geometry alone, exactly the
:class:`~resnets.preprocess.Preprocessing` recorded in the weights file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..preprocess import resize_crop

AUGMENTATIONS = ("pad-crop", "random-resized-crop", "none")
CROP_PAD = 4
RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


@dataclass(frozen=True)
class RecipeTransforms:
    """Training size ``size``, ``augmentation`` (one of :data:`AUGMENTATIONS`), evaluation resize ratio.

    ``eval_resize`` is the shorter side before the centre crop, as a multiple of ``size`` (1 for the
    CIFAR recipes, 256/224 for ImageNet-style fine-tuning).
    """

    size: int
    augmentation: str
    eval_resize: float = 1.0

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}")

    @property
    def resize(self) -> int:
        return round(self.size * self.eval_resize)

    def decode_sizes(self, split: str) -> tuple[int, int]:
        """``(shorter side, square crop)`` a split's images are decoded to.

        Random-resized-crop training keeps the whole resized square to crop from; everything else
        decodes to the evaluation geometry.
        """
        if split == "train" and self.augmentation == "random-resized-crop":
            return self.resize, self.resize
        return self.resize, self.size

    def decoder(self, split: str) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image to uint8 CHW pixels at ``split``'s decode geometry (the cache's, or a streaming worker's)."""
        return resize_crop(*self.decode_sizes(split))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Random parameters for a global batch of ``n``: one row per image (crop box or offsets, flip)."""
        if self.augmentation == "pad-crop":
            offsets = torch.randint(0, 2 * CROP_PAD + 1, (n, 2), generator=generator)
            return torch.cat([offsets, (torch.rand(n, generator=generator) < 0.5).long()[:, None]], 1)
        if self.augmentation == "random-resized-crop":
            boxes = torch.stack([_resized_crop_box(self.resize, generator) for _ in range(n)])
            return torch.cat([boxes, (torch.rand(n, generator=generator) < 0.5).long()[:, None]], 1)
        return torch.zeros(n, 0, dtype=torch.long)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The augmented uint8 batch (N, C, size, size) from decoded training images and their parameters."""
        if self.augmentation == "pad-crop":
            return crop_flip(images, params[:, :2], params[:, 2].bool(), CROP_PAD)
        if self.augmentation == "random-resized-crop":
            out = [TF.resized_crop(img, *box[:4].tolist(), [self.size, self.size], antialias=True)
                   for img, box in zip(images, params)]
            batch = torch.stack(out) if out else images.new_zeros((0, images.shape[1], self.size, self.size))
            return torch.where(params[:, 4].bool().to(batch.device)[:, None, None, None], batch.flip(-1), batch)
        return images


def _resized_crop_box(side: int, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop box (top, left, height, width) on a square, from ``generator``."""
    area = side * side
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        target = area * (RRC_SCALE[0] + (RRC_SCALE[1] - RRC_SCALE[0]) * torch.rand(1, generator=generator).item())
        ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=generator).item())
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= side and 0 < h <= side:
            top = int(torch.randint(0, side - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, side - w + 1, (1,), generator=generator))
            return torch.tensor([top, left, h, w])
    return torch.tensor([0, 0, side, side])


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = CROP_PAD) -> torch.Tensor:
    """Zero-pad by ``pad``, crop back to the original size at ``offsets`` and mirror where ``flips``."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (n, h)
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)  # (n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]
