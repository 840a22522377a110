"""Decoding at the size the crop needs: the training crops pick their box from the JPEG header first, then let
libjpeg decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the box at least the output size.

:class:`DecodeRandomResizedCrop` draws its box exactly as torchvision's ``RandomResizedCrop.get_params`` does
(the same draws from torch's generator, so the same boxes under the same seed), on the upright full-size
coordinates; :class:`DecodeScaleCrop` is the paper's scale augmentation (shorter side uniform in [256, 480], then
a random crop). Both take a file (a path or its bytes) rather than pixels, since what to decode depends on the box.
:func:`decode_jpeg_batch` decodes a batch on the GPU (``torchvision.io.decode_jpeg(device="cuda")``).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import torch
from PIL import Image

from ..errors import BadInput
from .images import INTERPOLATIONS, ImageLoadError, load_img

#: EXIF orientations that turn the image a quarter, so the header's width and height swap once it is upright.
_QUARTER_TURNS = {5, 6, 7, 8}
Source = str | os.PathLike | bytes


def random_resized_crop_box(height: int, width: int, scale: Sequence[float] = (0.08, 1.0),
                            ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a crop of an image of that size: torchvision's
    ``RandomResizedCrop.get_params``, draw for draw (torch's global generator), without needing the pixels."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    in_ratio = width / height  # fallback: the centre crop at the nearest allowed aspect ratio
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _open(source: Source) -> Image.Image:
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as e:  # noqa: BLE001 - PIL fails with OSError, UnidentifiedImageError, SyntaxError...
        raise ImageLoadError("<bytes>" if isinstance(source, bytes) else source,
                             f"not an image or unreadable: {type(e).__name__}: {e}") from e


def upright_size(source: Source) -> tuple[int, int]:
    """``(width, height)`` of the image once its EXIF orientation is applied, read from the header alone."""
    with _open(source) as img:
        w, h = img.size
        return (h, w) if img.getexif().get(0x0112) in _QUARTER_TURNS else (w, h)


def _reduced(source: Source, min_side: int) -> Image.Image:
    """Upright RGB pixels decoded at the smallest DCT scale whose shorter side is still >= ``min_side``."""
    return load_img(io.BytesIO(source) if isinstance(source, bytes) else source, min_side=min_side)


class DecodeRandomResizedCrop:
    """``RandomResizedCrop(size, scale, ratio)`` from a file, decoding only as much as the crop needs.

    The box is drawn on the upright full-size image (:func:`random_resized_crop_box`); the JPEG is decoded at the
    smallest scale that keeps the box's shorter side >= the output's, and the box, mapped onto those pixels, is
    resized to ``size`` in one step (PIL's ``resize(box=)``). Returns an RGB PIL image.
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bilinear") -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)  # (height, width)
        if interpolation not in INTERPOLATIONS:
            raise BadInput(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.scale, self.ratio, self.interpolation = tuple(scale), tuple(ratio), INTERPOLATIONS[interpolation]

    def __call__(self, source: Source) -> Image.Image:
        width, height = upright_size(source)
        top, left, h, w = random_resized_crop_box(height, width, self.scale, self.ratio)
        # The decoded shorter side that keeps the box >= the output in both directions.
        need = max(self.size[0] / h, self.size[1] / w)
        img = _reduced(source, math.ceil(min(width, height) * min(need, 1.0)))
        sx, sy = img.width / width, img.height / height
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        return img.resize(self.size[::-1], self.interpolation, box=box)


class DecodeScaleCrop:
    """The paper's scale augmentation (He et al. 2015, 3.4): the shorter side resized to a size drawn uniformly from
    ``[low, high]``, then a random ``size`` x ``size`` crop; decoded at the smallest scale that keeps that side."""

    def __init__(self, size: int, low: int = 256, high: int = 480, interpolation: str = "bilinear") -> None:
        if not size <= low <= high:
            raise BadInput(f"need size <= low <= high, got size={size}, low={low}, high={high}")
        if interpolation not in INTERPOLATIONS:
            raise BadInput(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.size, self.low, self.high, self.interpolation = size, low, high, INTERPOLATIONS[interpolation]

    def __call__(self, source: Source) -> Image.Image:
        width, height = upright_size(source)
        side = int(torch.randint(self.low, self.high + 1, (1,)).item())
        ratio = side / min(width, height)
        # The resized size as torchvision's resize(side) gives it: the shorter side exact, the longer floored.
        w, h = (side, int(side * height / width)) if width <= height else (int(side * width / height), side)
        top = int(torch.randint(0, h - self.size + 1, (1,)).item())
        left = int(torch.randint(0, w - self.size + 1, (1,)).item())
        img = _reduced(source, side)
        sx, sy = img.width / width, img.height / height
        box = (left / ratio * sx, top / ratio * sy, (left + self.size) / ratio * sx, (top + self.size) / ratio * sy)
        return img.resize((self.size, self.size), self.interpolation, box=box)


def decode_jpeg_batch(data: Sequence[bytes], device: str | torch.device = "cuda") -> list[torch.Tensor]:
    """JPEG files' bytes decoded on the GPU in one call (nvJPEG through ``torchvision.io.decode_jpeg``): uint8 RGB
    CHW tensors on ``device``, for augmentation there (``--decode gpu``)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BadInput(f"decoding on the GPU needs a CUDA device; got device={device} on a machine where CUDA is "
                       f"{'available' if torch.cuda.is_available() else 'not available'} (use the CPU decoding)")
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
    return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
