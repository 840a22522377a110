"""Uploaded images to network inputs within a memory budget: the service's memory peak, whatever clients send.

Decoding is what costs memory (a 5000x5000 PNG can be a few KB on the wire and is 100 MB of pixels), so each
image is reduced to what its request needs in the decoding thread, right after decoding: the network's input
(the weights' resize and crop, exactly as ``resnets predict``), and for ``/v1/explain`` the panel's view of the
photo (:func:`~resnets.explain_images.panel_view`), never the photo itself. And the memory of the images being
decoded at once, across all requests and endpoints, is bounded by a :class:`DecodingBudget`, each image's share
estimated from its header (width x height x :data:`BYTES_PER_PIXEL` of its mode) before decoding: a request waits
for its share, and an image whose share is more than the whole budget is refused with 413.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data.images import load_img
from ..explain_images import panel_view
from ..pipeline import Inference
from .http import ApiError

MIB = 1024 * 1024


@dataclass
class Decoded:
    """One upload, decoded and reduced: the network's input, and the panel's view of the photo if asked for."""

    x: torch.Tensor
    view: Image.Image | None


def decode(data: bytes, inf: Inference, view: bool = False) -> Decoded:
    """``data`` as the network's input (``load_img`` + the weights' recipe, as ``resnets predict`` does), and
    with ``view`` the part of the photo an explanation panel shows; the photo itself is freed on return."""
    photo = load_img(io.BytesIO(data))
    return Decoded(inf.preprocessing(photo), panel_view(photo, inf.preprocessing) if view else None)


def decode_pixels(pixels: np.ndarray, inf: Inference) -> Decoded:
    """RGB pixels (height, width, 3 of uint8: the Open Inference Protocol's ``pixels`` input) as the network's
    input: the weights' recipe on them, as on a decoded photo of those pixels."""
    return Decoded(inf.preprocessing(Image.fromarray(np.ascontiguousarray(pixels))), None)


#: Bytes of memory per pixel that decoding an image and converting it to 8-bit RGB take at their peak, an upper
#: bound (the README's Serving says how it was measured): opaque 8-bit modes (JPEG, RGB, grey, palette PNGs), and
#: the others (transparency, 16- and 32-bit, float), which ``colour.to_rgb`` converts through several copies.
BYTES_PER_PIXEL, BYTES_PER_PIXEL_WIDE = 10, 32
OPAQUE_8BIT = frozenset({"1", "L", "P", "RGB", "RGBX", "YCbCr", "CMYK", "LAB", "HSV"})
#: Bytes of memory per byte of JSON that parsing an inference request's JSON takes at its peak, an upper bound
#: (Python objects for every number and list; the README's Serving says how it was measured).
JSON_BYTES_PER_BYTE = 26


def decoding_bytes(data: bytes) -> int:
    """The memory decoding ``data`` will take (see :data:`BYTES_PER_PIXEL`), from its header alone; 0 where PIL
    cannot read the header or will refuse the image as a decompression bomb (decoding then fails at once,
    saying why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                (width, height), mode, transparent = img.size, img.mode, img.has_transparency_data
    except Exception:  # noqa: BLE001 - any header PIL cannot read: load_img names the problem
        return 0
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return 0
    return width * height * (BYTES_PER_PIXEL if mode in OPAQUE_8BIT and not transparent else BYTES_PER_PIXEL_WIDE)


class DecodingBudget:
    """Memory for decoding, shared by every request: a first-come, first-served semaphore counted in bytes
    (a large image waiting is not overtaken by small ones). Event-loop only."""

    def __init__(self, size: int) -> None:
        self.total = self.free = size
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @property
    def used(self) -> int:
        return self.total - self.free

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the budget for the block, waiting for them if needed; 413 if over all of it."""
        if size > self.total:
            raise ApiError(413, "image_too_large", f"decoding this image takes about {size / MIB:.0f} MiB, over "
                                                   f"the server's decoding budget of {self.total / MIB:.0f} MiB "
                                                   "(--decode-memory-mb)")
        if self._waiting or size > self.free:
            entry = (size, asyncio.get_running_loop().create_future())
            self._waiting.append(entry)
            try:
                await entry[1]
            except asyncio.CancelledError:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                    self._grant()  # it may have held back those behind it
                elif not entry[1].cancelled():  # granted as it was cancelled
                    self._release(size)
                raise
        else:
            self.free -= size
        try:
            yield
        finally:
            self._release(size)

    def _release(self, size: int) -> None:
        self.free += size
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            size, future = self._waiting.popleft()
            if not future.cancelled():
                self.free -= size
                future.set_result(None)
