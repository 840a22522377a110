"""Turn images into network inputs exactly as each set of pretrained weights expects.

:class:`Preprocessing` describes one recipe (resize, crop, scale, channel order, mean/std) and applies
it to PIL images with torchvision's functional ops, reproducing torchvision's own ImageNet transforms;
:func:`preprocess_input` is the Keras-compatible array version (``caffe``, ``tf``, ``torch`` modes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .errors import BadInput, UnknownName
from .colour import to_rgb

INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")


@dataclass(frozen=True)
class Preprocessing:
    """One input recipe: ``(pixels * scale, reordered to channel_order, - mean) / std``.

    ``mean`` and ``std`` are given in ``channel_order``; ``scale`` multiplies the 0..255 pixels
    (``1/255`` for torchvision-style weights, ``1`` for Caffe-style ones). ``resize_size`` is the
    shorter side after resizing (aspect ratio kept, antialiased) and ``crop_size`` the side of the
    centre crop; ``None`` skips that step. ``pixel_mean`` (the paper's CIFAR recipe: "the per-pixel mean
    subtracted") is a (3, crop, crop) image flattened, in scaled units, subtracted after ``mean``.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1 / 255
    channel_order: str = "RGB"
    resize_size: int | None = None
    crop_size: int | None = None
    interpolation: str = "bilinear"
    pixel_mean: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise BadInput(f"mean and std need 3 values each, got mean={self.mean} std={self.std}")
        if any(s == 0 for s in self.std):
            raise BadInput(f"std must not contain 0, got {self.std}")
        if self.channel_order not in ("RGB", "BGR"):
            raise UnknownName(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise UnknownName(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        for field in ("resize_size", "crop_size"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise BadInput(f"{field} must be a positive int or None, got {value}")
        if self.pixel_mean is not None and (self.crop_size is None or len(self.pixel_mean) != 3 * self.crop_size**2):
            raise BadInput(f"pixel_mean needs crop_size and 3 * crop_size**2 values, got {len(self.pixel_mean)} "
                             f"values for crop_size {self.crop_size}")

    def __call__(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        """A float32 CHW tensor from a PIL image (any mode) or a uint8 RGB CHW tensor."""
        return self.normalize(self.crop(img))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Scale, reorder and normalise a (N)CHW RGB tensor of 0..255 pixels, on its own device.

        Lets a caller move uint8 batches to the GPU and normalise there. Integer input gives float32;
        a floating input keeps its dtype.
        """
        if x.ndim not in (3, 4) or x.shape[-3] != 3:
            raise BadInput(f"expected an RGB image tensor of shape (3, H, W) or (N, 3, H, W), got {tuple(x.shape)}")
        if self.channel_order == "BGR":
            x = x.flip(-3)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        # torchvision's arithmetic (ToDtype(scale=True), then Normalize), in place on the one new tensor: the same
        # numbers as its reference transforms, and several times faster on a CPU than one broadcast addcmul.
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(3, 1, 1)
        out = x.to(dtype, copy=True).mul_(self.scale).sub_(mean).div_(std)
        if self.pixel_mean is not None:
            size = self.crop_size
            if tuple(x.shape[-2:]) != (size, size):
                raise BadInput(f"this recipe subtracts a {size}x{size} per-pixel mean; got images of "
                                 f"{tuple(x.shape[-2:])}")
            pixels = torch.tensor(self.pixel_mean, dtype=dtype, device=x.device).view(3, size, size)
            out = out - pixels / torch.tensor(self.std, dtype=dtype, device=x.device).view(3, 1, 1)
        return out

    def crop(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        """Resize and centre-crop only: uint8 CHW pixels, the step before :meth:`normalize`."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        if isinstance(img, Image.Image):
            img = to_rgb(img)
        if self.resize_size is not None:
            img = F.resize(img, self.resize_size, interpolation=InterpolationMode(self.interpolation), antialias=True)
        if self.crop_size is not None:
            img = F.center_crop(img, [self.crop_size, self.crop_size])
        return F.pil_to_tensor(img) if isinstance(img, Image.Image) else img


def resize_crop(resize_size: int, crop_size: int) -> Callable[[Image.Image | torch.Tensor], torch.Tensor]:
    """Resize the shorter side and centre-crop, without normalising: uint8 CHW pixels for caches and loaders."""
    return Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize_size=resize_size, crop_size=crop_size).crop


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: torchvision's ImageNet recipe (and Keras' ``torch`` mode): RGB in [0, 1], ImageNet mean/std.
IMAGENET_TORCH = Preprocessing(_IMAGENET_MEAN, _IMAGENET_STD, resize_size=256, crop_size=224)
#: Caffe's (original ResNet, Keras ResNet50) recipe: BGR 0..255 minus the mean pixel, no std.
IMAGENET_CAFFE = Preprocessing((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), scale=1.0, channel_order="BGR",
                               resize_size=256, crop_size=224)
#: Keras' ``tf`` mode (e.g. Keras ResNet50V2): RGB scaled to [-1, 1].
IMAGENET_TF = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize_size=256, crop_size=224)
#: The shared CIFAR-10 checkpoints' recipe (ImageNet mean/std on [0, 1]). 32x32 images pass unchanged;
#: larger photos are shrunk to 32 on the shorter side and centre-cropped, the scale the networks know.
CIFAR10 = Preprocessing(_IMAGENET_MEAN, _IMAGENET_STD, resize_size=32, crop_size=32)

KERAS_MODES = {"caffe": IMAGENET_CAFFE, "tf": IMAGENET_TF, "torch": IMAGENET_TORCH}


def preprocess_input(x: np.ndarray | torch.Tensor, mode: str = "caffe") -> np.ndarray | torch.Tensor:
    """Keras' ``imagenet_utils.preprocess_input``: 0..255 RGB pixels to network input, never in place.

    NumPy arrays are channels-last (NHWC or HWC) as in Keras and come back in that layout; torch
    tensors are channels-first (NCHW or CHW), the PyTorch convention. ``mode``: ``caffe`` (RGB->BGR,
    minus the BGR mean pixel 103.939, 116.779, 123.68), ``tf`` (to [-1, 1]) or ``torch`` (/255, then
    ImageNet mean/std). Float input keeps its dtype; integer input becomes float32.
    """
    if mode not in KERAS_MODES:
        raise UnknownName(f"mode must be one of {', '.join(KERAS_MODES)}, got {mode!r}")
    recipe = KERAS_MODES[mode]
    if isinstance(x, torch.Tensor):
        return recipe.normalize(x)
    array = np.asarray(x)
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise BadInput(f"expected channels-last RGB pixels of shape (H, W, 3) or (N, H, W, 3), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    channels_first = torch.from_numpy(np.ascontiguousarray(array)).movedim(-1, -3)
    return recipe.normalize(channels_first).movedim(-3, -1).numpy()
