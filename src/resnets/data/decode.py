"""Decoding at the size the crop needs: the training crops pick their box from the JPEG header first, then let
libjpeg decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the box at least the output size, and only the
rows and columns the box covers (libjpeg-turbo's partial decoding, through the small ``_jpegcrop`` extension where it
was built; whole images otherwise, the same pixels either way).

:class:`DecodeRandomResizedCrop` draws its box exactly as torchvision's ``RandomResizedCrop.get_params`` does
(the same draws from torch's generator, so the same boxes under the same seed), on the upright full-size
coordinates; :class:`DecodeScaleCrop` is the paper's scale augmentation (shorter side uniform in [256, 480], then
a random crop). Both take a file (a path or its bytes) rather than pixels, since what to decode depends on the box.
:func:`decode_jpeg_batch` decodes a batch on the GPU (``torchvision.io.decode_jpeg(device="cuda")``).
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import simplejpeg
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..errors import BadInput
from .images import ImageLoadError, load_img

try:
    from . import _jpegcrop
except ImportError:  # not built (no libjpeg headers where it was installed): whole images are decoded and cut
    _jpegcrop = None

#: EXIF orientations that turn the image a quarter, so the header's width and height swap once it is upright.
_QUARTER_TURNS = {5, 6, 7, 8}
Source = str | os.PathLike | bytes
#: Bytes of a JPEG's start searched for an EXIF block (APP1 segments are at most 64 KiB and come first).
_EXIF_REACH = 65_536


def random_resized_crop_box(height: int, width: int, scale: Sequence[float] = (0.08, 1.0),
                            ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a crop of an image of that size: torchvision's
    ``RandomResizedCrop.get_params``, draw for draw (torch's global generator), without needing the pixels."""
    area = height * width
    log_ratio = _log_ratio(tuple(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(*log_ratio)).item()
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


@functools.cache
def _log_ratio(ratio: tuple[float, float]) -> tuple[float, float]:
    """The bounds torchvision draws the log aspect ratio between (float32 logs, as ``torch.log`` gives them)."""
    low, high = torch.log(torch.tensor(ratio)).tolist()
    return low, high


def _open(source: Source) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(_name(source), f"refused as a possible decompression bomb: {e} "
                                            "(raise PIL.Image.MAX_IMAGE_PIXELS to accept it)") from e
    except Exception as e:  # noqa: BLE001 - PIL fails with OSError, UnidentifiedImageError, SyntaxError...
        raise ImageLoadError(_name(source), f"not an image or unreadable: {type(e).__name__}: {e}") from e


def _name(source: Source) -> str:
    return "<bytes>" if isinstance(source, bytes) else str(source)


class Header(NamedTuple):
    """What the header says: the upright size, and whether libjpeg-turbo can decode the file directly (an 8-bit
    RGB or grayscale JPEG that EXIF does not turn)."""
    width: int
    height: int
    plain_jpeg: bool


def read_header(source: Source) -> Header:
    """The :class:`Header` of a file, read without decoding its pixels: a JPEG's bytes without EXIF by libjpeg-turbo
    alone, anything else by PIL (EXIF orientation, every other format)."""
    # find() with bounds searches in place: slicing first would copy the 64 KiB
    if isinstance(source, bytes) and source[:2] == b"\xff\xd8" and source.find(b"Exif\x00\x00", 0, _EXIF_REACH) < 0:
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(source)
        except ValueError:
            pass  # PIL names the fault
        else:
            if colorspace in ("YCbCr", "Gray", "RGB") and width * height <= (Image.MAX_IMAGE_PIXELS or math.inf):
                return Header(width, height, True)
    with _open(source) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112)
        plain = img.format == "JPEG" and img.mode in ("RGB", "L") and orientation in (None, 1)
        return Header(h, w, plain) if orientation in _QUARTER_TURNS else Header(w, h, plain)


def _dct_scale(header: Header, min_side: int) -> tuple[int, int, int]:
    """The largest DCT down-scaling (8, 4, 2 or 1) that keeps the image's shorter side >= ``min_side``, and the
    (height, width) libjpeg decodes to at it (each side divided, rounded up)."""
    factor = next(k for k in (8, 4, 2, 1) if k == 1 or -(-min(header.width, header.height) // k) >= min_side)
    return factor, -(-header.height // factor), -(-header.width // factor)


def decode_pixels(source: Source, header: Header, min_side: int) -> torch.Tensor:
    """Upright RGB uint8 CHW pixels, decoded at the smallest power-of-two DCT scale (1/2, 1/4, 1/8) whose shorter
    side is still >= ``min_side``. Plain JPEGs go to libjpeg-turbo directly (simplejpeg: the same pixels as PIL's
    decode without PIL's copies); everything else, and any JPEG simplejpeg refuses, through :func:`load_img`, which
    names the file if it cannot be decoded at all."""
    if header.plain_jpeg:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        _, height, width = _dct_scale(header, min_side)
        try:
            pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=height, min_width=width)
            return torch.from_numpy(pixels).permute(2, 0, 1)
        except ValueError:
            pass  # not libjpeg-turbo's (arithmetic coding, truncated...): PIL decodes it or names the fault
    img = load_img(io.BytesIO(source) if isinstance(source, bytes) else source, min_side=min_side)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _scaled_box(box: tuple[float, float, float, float], header: Header,
                shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` (top, left, height, width on the full-size upright image) in the pixels of the image decoded to
    ``shape`` (height, width), at least one pixel and inside it."""
    sy, sx = shape[0] / header.height, shape[1] / header.width
    top, left = min(round(box[0] * sy), shape[0] - 1), min(round(box[1] * sx), shape[1] - 1)
    return top, left, max(1, min(round(box[2] * sy), shape[0] - top)), max(1, min(round(box[3] * sx), shape[1] - left))


def decode_box(source: Source, header: Header, box: tuple[float, float, float, float], min_side: int) -> torch.Tensor:
    """The pixels (RGB uint8 CHW) of ``box`` (top, left, height, width on the full-size upright image), from the
    image decoded as :func:`decode_pixels` decodes it. A plain JPEG is decoded only where the box is (libjpeg-turbo
    skips the rows below it, entropy-decodes those above without transforming them, and transforms only the
    columns beside it): the same pixels as the whole decode cut to the box."""
    if header.plain_jpeg and _jpegcrop is not None:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        factor, *shape = _dct_scale(header, min_side)
        top, left, height, width = _scaled_box(box, header, shape)
        try:
            pixels = _jpegcrop.decode_crop(data, factor, top, left, height, width)
            return torch.frombuffer(pixels, dtype=torch.uint8).view(height, width, 3).permute(2, 0, 1)
        except ValueError:
            pass  # corrupt, truncated, arithmetic-coded...: the whole decode below decodes it or names the file
    pixels = decode_pixels(source, header, min_side)
    top, left, height, width = _scaled_box(box, header, (pixels.shape[1], pixels.shape[2]))
    return pixels[:, top:top + height, left:left + width]


def _interpolation(name: str) -> InterpolationMode:
    if name not in CROP_INTERPOLATIONS:
        raise BadInput(f"interpolation must be one of {', '.join(CROP_INTERPOLATIONS)}, got {name!r}")
    return InterpolationMode(name)


#: The resampling filters the crops offer (those torchvision resizes uint8 tensors with).
CROP_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


class DecodeRandomResizedCrop:
    """``RandomResizedCrop(size, scale, ratio)`` from a file, decoding only as much as the crop needs.

    The box is drawn on the upright full-size image (:func:`random_resized_crop_box`); the JPEG is decoded at the
    smallest scale that keeps the box's shorter side >= the output's, and the box, mapped onto those pixels, is
    resized to ``size`` in one step. Returns uint8 CHW pixels.
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bilinear") -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)  # (height, width)
        self.scale, self.ratio, self.interpolation = tuple(scale), tuple(ratio), _interpolation(interpolation)

    def __call__(self, source: Source) -> torch.Tensor:
        header = read_header(source)
        top, left, h, w = random_resized_crop_box(header.height, header.width, self.scale, self.ratio)
        # The decoded shorter side that keeps the box >= the output in both directions.
        need = max(self.size[0] / h, self.size[1] / w)
        pixels = decode_box(source, header, (top, left, h, w),
                            math.ceil(min(header.width, header.height) * min(need, 1.0)))
        return F.resize(pixels, list(self.size), self.interpolation, antialias=True)


class DecodeScaleCrop:
    """The paper's scale augmentation (He et al. 2015, 3.4): the shorter side resized to a size drawn uniformly from
    ``[low, high]``, then a random ``size`` x ``size`` crop; decoded at the smallest scale that keeps that side.
    Returns uint8 CHW pixels."""

    def __init__(self, size: int, low: int = 256, high: int = 480, interpolation: str = "bilinear") -> None:
        if not size <= low <= high:
            raise BadInput(f"need size <= low <= high, got size={size}, low={low}, high={high}")
        self.size, self.low, self.high, self.interpolation = size, low, high, _interpolation(interpolation)

    def __call__(self, source: Source) -> torch.Tensor:
        header = read_header(source)
        width, height = header.width, header.height
        side = int(torch.randint(self.low, self.high + 1, (1,)).item())
        ratio = side / min(width, height)
        # The resized size as torchvision's resize(side) gives it: the shorter side exact, the longer floored.
        w, h = (side, int(side * height / width)) if width <= height else (int(side * width / height), side)
        top = int(torch.randint(0, h - self.size + 1, (1,)).item())
        left = int(torch.randint(0, w - self.size + 1, (1,)).item())
        pixels = decode_box(source, header, (top / ratio, left / ratio, self.size / ratio, self.size / ratio), side)
        return F.resize(pixels, [self.size, self.size], self.interpolation, antialias=True)


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
