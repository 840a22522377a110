"""Colour conversion of PIL images to what the networks take, correct for every mode PIL opens.

At the bottom of the package: the image loader (``data/images.py``) and the preprocessing recipes
(``preprocess.py``) both convert with it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


def to_8bit(img: Image.Image) -> Image.Image:
    """8-bit ``L`` for 16-bit, 32-bit int and float images (PIL's convert would clip them), alpha un-premultiplied."""
    if img.mode in ("La", "RGBa"):  # premultiplied alpha: PIL converts these only to their straight-alpha twin
        return img.convert(img.mode[:-1] + "A")
    if img.mode.startswith("I;16"):
        scale = 255 / 65535
        pixels = np.asarray(img.convert("I"), dtype=np.float64)
    elif img.mode == "I":
        pixels = np.asarray(img, dtype=np.float64)
        scale = 255 / 65535 if pixels.size and pixels.max() > 255 else 1.0
    elif img.mode == "F":
        pixels = np.asarray(img, dtype=np.float64)
        scale = 255.0 if pixels.size and pixels.max() <= 1.0 else 1.0
    else:
        return img
    return Image.fromarray(np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8))


def flatten(img: Image.Image) -> Image.Image:
    """8-bit ``L`` or ``RGB`` without transparency, transparent pixels composited on white."""
    gray = img.mode in GRAY_MODES or img.mode.startswith("I;16")
    img = to_8bit(img)
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    if gray:
        return img.convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, correctly scaled from any PIL mode, transparency composited on white."""
    img = flatten(img)
    return img if img.mode == "RGB" else img.convert("RGB")
