"""What a recipe does to images: how each split is decoded, and the batch augmentation, for both storage modes.

The recipe owns the transforms, not the storage mode. Images are decoded to a fixed geometry (resize
the shorter side, centre crop) either once into memory or per step by DataLoader workers; the same
random augmentation is then drawn for the global batch from one checkpointed generator and applied
on the batch tensor. So a cached and a streamed run see the same pixels, and a resumed run, or one on
another number of processes, the same batches. Evaluation is the decode geometry alone, exactly the
:class:`~resnets.preprocess.Preprocessing` recorded in the weights file.

After the crop and flip come the per-image policies (:mod:`.policies`: auto-augment on the uint8 pixels,
random erasing on the normalised input), each image under its own seed drawn from the same generator. The
training side may differ from the decoded one (``train_crop_size``, or progressive resizing's side of the
epoch): the crop is resized to it; evaluation has its own resize and crop (``val_resize_size``, ``val_crop_size``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..data.decode import DecodeRandomResizedCrop, DecodeScaleCrop
from ..data.train_input import TrainDecode
from ..errors import UnknownName
from ..preprocess import resize_crop
from .policies import SamplePolicy

AUGMENTATIONS = ("pad-crop", "random-resized-crop", "scale-crop", "none")
CROP_PAD = 4
RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
SCALE_RANGE = (256, 480)  # the paper's scale augmentation (3.4): shorter side uniform in [256, 480], a 224 crop


@dataclass(frozen=True)
class RecipeTransforms:
    """Decoded size ``size``, ``augmentation`` (one of :data:`AUGMENTATIONS`), evaluation resize ratio.

    ``eval_resize`` is the shorter side before the centre crop, as a multiple of the crop (1 for the
    CIFAR recipes, 256/224 for ImageNet-style fine-tuning). ``train_size`` (default ``size``) is the side
    training crops are resized to; ``eval_size`` (default ``size``) and ``eval_resize_size`` (default
    ``eval_size * eval_resize``) the evaluation crop and shorter side. ``policy``: the per-image policies.
    """

    size: int
    augmentation: str
    eval_resize: float = 1.0
    train_size: int | None = None
    eval_size: int | None = None
    eval_resize_size: int | None = None
    policy: SamplePolicy = SamplePolicy()

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATIONS:
            raise UnknownName(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}")

    @property
    def crop(self) -> int:
        """The evaluation crop side."""
        return self.eval_size or self.size

    @property
    def resize(self) -> int:
        """The evaluation shorter side before the crop."""
        return self.eval_resize_size or round(self.crop * self.eval_resize)

    @property
    def train_crop(self) -> int:
        return self.train_size or self.size

    def decode_sizes(self, split: str) -> tuple[int, int]:
        """``(shorter side, square crop)`` a split's images are decoded to.

        Random-resized-crop training keeps the whole resized square to crop from; the other training
        augmentations decode to ``size`` (resized by ``eval_resize``), evaluation to its own geometry.
        """
        if split != "train":
            return self.resize, self.crop
        if self.augmentation == "scale-crop":  # the largest scale's square: every drawn scale is a crop of it
            side = round(self.size * SCALE_RANGE[1] / 224)
            return side, side
        resize = round(self.size * self.eval_resize)
        return (resize, resize) if self.augmentation == "random-resized-crop" else (resize, self.size)

    def decoder(self, split: str) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image to uint8 CHW pixels at ``split``'s decode geometry (the cache's, or a streaming worker's)."""
        return resize_crop(*self.decode_sizes(split))

    def crop_decoder(self, side: int) -> TrainDecode:
        """A file to its augmented uint8 training crop of ``side`` (``decode="crop"``): the random crop drawn on the
        whole image and decoded at the size it needs, the flip, then the per-image policy; all from torch's global
        generator, which the caller seeds per image."""
        if self.augmentation == "scale-crop":
            low, high = (round(side * s / 224) for s in SCALE_RANGE)
            crop: DecodeRandomResizedCrop | DecodeScaleCrop = DecodeScaleCrop(side, low, high)
        else:
            crop = DecodeRandomResizedCrop(side, RRC_SCALE, RRC_RATIO)
        return TrainDecode(crop=crop, augment=self.policy.transform)

    @property
    def _geometry(self) -> int:
        """Parameter columns of the crop and flip: the policies' seeds follow them."""
        return {"pad-crop": 3, "random-resized-crop": 5, "scale-crop": 5, "none": 0}[self.augmentation]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Random parameters for a global batch of ``n``: one row per image (crop box or offsets, flip, seeds)."""
        if self.augmentation == "pad-crop":
            offsets = torch.randint(0, 2 * CROP_PAD + 1, (n, 2), generator=generator)
            geometry = torch.cat([offsets, (torch.rand(n, generator=generator) < 0.5).long()[:, None]], 1)
        elif self.augmentation == "random-resized-crop":
            boxes = torch.stack([_resized_crop_box(self.decode_sizes("train")[0], generator) for _ in range(n)])
            geometry = torch.cat([boxes, (torch.rand(n, generator=generator) < 0.5).long()[:, None]], 1)
        elif self.augmentation == "scale-crop":
            boxes = torch.stack([_scale_crop_box(self.decode_sizes("train")[0], self.size, generator)
                                 for _ in range(n)])
            geometry = torch.cat([boxes, (torch.rand(n, generator=generator) < 0.5).long()[:, None]], 1)
        else:
            geometry = torch.zeros(n, 0, dtype=torch.long)
        return torch.cat([geometry, self.policy.sample(n, generator)], 1) if self.policy.columns else geometry

    def apply(self, images: torch.Tensor, params: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """The augmented uint8 batch (N, C, side, side) from decoded training images and their parameters;
        ``side`` is ``size`` (progressive resizing's) or :attr:`train_crop`."""
        side = size or self.train_crop
        if self.augmentation in ("random-resized-crop", "scale-crop"):
            out = [TF.resized_crop(img, *box[:4].tolist(), [side, side], antialias=True)
                   for img, box in zip(images, params)]
            batch = torch.stack(out) if out else images.new_zeros((0, images.shape[1], side, side))
            batch = torch.where(params[:, 4].bool().to(batch.device)[:, None, None, None], batch.flip(-1), batch)
        else:
            batch = crop_flip(images, params[:, :2], params[:, 2].bool(), CROP_PAD) \
                if self.augmentation == "pad-crop" else images
            if batch.shape[-1] != side and len(batch):
                batch = TF.resize(batch, [side, side], antialias=True)
        return self.policy.augment(batch, params[:, self._geometry:])

    def erase(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Random erasing on the normalised batch ``x`` (the last step before mixing)."""
        return self.policy.erase(x, params[:, self._geometry:])


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


def _scale_crop_box(side: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """The paper's scale augmentation on the square decoded at the largest scale (``side``): the shorter side drawn
    uniformly from :data:`SCALE_RANGE` (scaled to a ``size`` crop), a random ``size`` crop of it, as the box
    (top, left, height, width) it covers on ``side``."""
    scale = int(torch.randint(round(size * SCALE_RANGE[0] / 224), side + 1, (1,), generator=generator))
    box = min(side, round(size * side / scale))
    top, left = (int(torch.randint(0, side - box + 1, (1,), generator=generator)) for _ in range(2))
    return torch.tensor([top, left, box, box])


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
