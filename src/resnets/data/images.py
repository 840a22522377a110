"""Image files in, RGB pixels out: Keras-style ``load_img``/``img_to_array``, and a fault-tolerant Dataset.

Every image PIL can decode comes out as 8-bit RGB whatever its mode (16-bit, float, CMYK, palette,
alpha), upright (EXIF orientation applied), and every way a file can fail (missing, empty, not an
image, truncated, a decompression bomb) raises one error type, :class:`ImageLoadError`, naming the
file, so a batch job can report and skip bad files instead of dying on them.

Decisions (documented, tested):

* Transparency (RGBA, LA, P or L/RGB with a transparency key) is composited on **white**, as an image
  viewer shows it; dropping the alpha band instead would expose whatever colour the invisible pixels
  hold (often black), which is not what the image looks like.
* 16-bit modes (``I;16*``) are scaled by 255/65535. ``I`` (32-bit int) is taken as 16-bit data when
  any value exceeds 255, as 8-bit otherwise; ``F`` (float) as 0..1 when its maximum is at most 1, as
  0..255 otherwise. Values outside the range are clipped.
* ``color_mode="grayscale"`` always gives 8-bit ``L`` (Keras keeps 16-bit grayscale as is), so
  :func:`img_to_array` is always in 0..255, the range ``preprocess_input`` expects.
* Decompression bombs: an image over ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (PIL's default:
  89,478,485, about 9459 x 9459, or 3.6 x a 48-megapixel phone photo) is refused: PIL's warning at that
  size is turned into an error. Raise ``PIL.Image.MAX_IMAGE_PIXELS`` to accept larger images.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image, ImageOps

from ..colour import flatten, to_8bit, to_rgb
from ..errors import BadInput, UnknownName

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
COLOR_MODES = ("rgb", "grayscale", "rgba")

PathOrFile = str | os.PathLike | io.BytesIO


class ImageLoadError(BadInput):
    """An image file that cannot be used; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) across DataLoader worker processes
        return type(self), (self.path, self.reason)


def _draft(img: Image.Image, min_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale (its DCT scaling: several times less work on a large
    photo) while the shorter side stays >= ``min_side``; other formats decode in full."""
    w, h = img.size
    if img.format != "JPEG" or min(w, h) < 2 * min_side:
        return
    scale = min_side / min(w, h)
    img.draft(img.mode, (math.ceil(w * scale), math.ceil(h * scale)))


def _open_and_decode(path: PathOrFile, min_side: int | None = None) -> Image.Image:
    """Decoded, upright image (``min_side``: see :func:`_draft`); every failure becomes an :class:`ImageLoadError`."""
    name = "<bytes>" if isinstance(path, io.BytesIO) else path
    if not isinstance(path, io.BytesIO):
        try:
            if os.path.getsize(path) == 0:
                raise ImageLoadError(name, "empty file (0 bytes)")
        except FileNotFoundError:
            raise ImageLoadError(name, "file not found") from None
        except OSError as e:
            raise ImageLoadError(name, f"cannot read file: {e.strerror or e}") from e
        if os.path.isdir(path):
            raise ImageLoadError(name, "is a directory, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if min_side:
                    _draft(img, min_side)
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # in place: no second copy of a large photo
                return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(name, f"refused as a possible decompression bomb: {e} "
                                   "(raise PIL.Image.MAX_IMAGE_PIXELS to accept it)") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(name, "not an image file (PIL cannot identify its format)") from e
    except PermissionError as e:
        raise ImageLoadError(name, f"cannot read file: {e.strerror}") from e
    except Exception as e:  # noqa: BLE001 - PIL's decoders fail with OSError, SyntaxError, ValueError, EOFError...
        raise ImageLoadError(name, f"corrupt or truncated image: {type(e).__name__}: {e}") from e


def _convert(img: Image.Image, color_mode: str) -> Image.Image:
    if color_mode == "rgb":
        return to_rgb(img)
    if color_mode == "grayscale":
        return flatten(img).convert("L")
    rgba = to_8bit(img)  # "rgba": keep the alpha band
    return rgba if rgba.mode == "RGBA" else rgba.convert("RGBA")


def _resize(img: Image.Image, target_size: tuple[int, int], interpolation: str,
            keep_aspect_ratio: bool) -> Image.Image:
    """Keras' resize: to (height, width) exactly, optionally center-cropping to the target's aspect ratio."""
    if interpolation not in INTERPOLATIONS:
        raise UnknownName(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    height, width = (int(v) for v in target_size)
    if img.size == (width, height):
        return img
    box = None
    if keep_aspect_ratio:
        w, h = img.size
        crop_h, crop_w = min(h, w * height // width), min(w, h * width // height)
        left, top = (w - crop_w) // 2, (h - crop_h) // 2
        box = (left, top, left + crop_w, top + crop_h)
    return img.resize((width, height), INTERPOLATIONS[interpolation], box=box)


def load_img(path: PathOrFile, target_size: tuple[int, int] | None = None, color_mode: str = "rgb",
             interpolation: str = "nearest", keep_aspect_ratio: bool = False, *,
             min_side: int | None = None) -> Image.Image:
    """Load an image file like ``keras.utils.load_img``, robust to every PIL mode and to bad files.

    ``target_size`` is ``(height, width)``; ``color_mode`` is ``"rgb"``, ``"grayscale"`` or ``"rgba"``;
    ``interpolation`` one of :data:`INTERPOLATIONS` (Keras' default ``"nearest"``). Unlike Keras, the
    EXIF orientation is applied and transparency is composited on white (see the module docstring).
    ``min_side`` (fast decoding for a model that resizes anyway): a JPEG at least twice that size on its
    shorter side is decoded at a reduced scale (1/2 to 1/8, by libjpeg) whose shorter side is still at least
    ``min_side``; its pixels then differ a little from a full decode. Raises :class:`ImageLoadError` naming
    the file for any file that cannot be used.
    """
    if not isinstance(path, (str, os.PathLike, io.IOBase)):  # an int would be read as a file descriptor
        raise TypeError(f"load_img takes a file path or a binary file object, got {type(path).__name__} {path!r}")
    if isinstance(target_size, str):
        raise TypeError(f"target_size must be (height, width), got {target_size!r}; pass color_mode= by keyword")
    if color_mode not in COLOR_MODES:
        raise UnknownName(f"color_mode {color_mode!r} is not one of {', '.join(COLOR_MODES)}")
    img = _open_and_decode(path, min_side)
    try:
        img = _convert(img, color_mode)
    except (ValueError, OSError) as e:
        raise ImageLoadError(path, f"cannot convert PIL mode {img.mode} to {color_mode}: {e}") from e
    if target_size is not None:
        img = _resize(img, target_size, interpolation, keep_aspect_ratio)
    return img


def img_to_array(img: Image.Image, data_format: str = "channels_last", dtype: str | np.dtype = "float32") -> np.ndarray:
    """Pixels of ``img`` as a 3-D array, HWC (or CHW with ``data_format="channels_first"``), as Keras does."""
    if data_format not in ("channels_last", "channels_first"):
        raise BadInput(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    x = np.asarray(img, dtype=dtype)
    if x.ndim == 2:
        x = x[:, :, None]
    elif x.ndim != 3:
        raise BadInput(f"unsupported image shape {x.shape} (PIL mode {img.mode})")
    return x.transpose(2, 0, 1) if data_format == "channels_first" else x


def array_to_img(x: np.ndarray, data_format: str = "channels_last", scale: bool = True,
                 dtype: str | np.dtype = "float32") -> Image.Image:
    """A 3-D array as a PIL image (``L``, ``RGB``, ``RGBA``, or ``I`` above 255), as ``keras.utils.array_to_img``.

    With ``scale`` the values are stretched to 0..255 (min to 0, max to 255) first.
    """
    if data_format not in ("channels_last", "channels_first"):
        raise BadInput(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    x = np.array(x, dtype=dtype)
    if x.ndim != 3:
        raise BadInput(f"expected a single image of rank 3, got an array of shape {x.shape}")
    if data_format == "channels_first":
        x = x.transpose(1, 2, 0)
    if scale:
        x = x - x.min()
        if x.max() != 0:
            x = x / x.max()
        x = x * 255
    channels = x.shape[2]
    if channels in (3, 4):
        return Image.fromarray(x.astype(np.uint8))
    if channels == 1:
        if x.max() > 255:
            return Image.fromarray(x[:, :, 0].astype(np.int32))
        return Image.fromarray(x[:, :, 0].astype(np.uint8))
    raise BadInput(f"unsupported number of channels {channels} in an array of shape {x.shape}")


def find_images(paths_or_dirs: str | os.PathLike | Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Image files named by ``paths_or_dirs``: files as given, directories expanded in sorted order.

    Inside directories only names ending in :data:`IMAGE_EXTENSIONS` (any case) count, and hidden
    files and folders (``.name``, e.g. macOS ``._photo.jpg`` resource forks) are skipped. Symbolic links
    lead elsewhere (another disk, a shared store) and are followed, except those that would list an image
    twice or under another folder's name: a link to the folder being listed or one above it (``ln -s ..``),
    to a folder above the link, or into a folder the listing already walks; each of those is named in one
    warning with where it points. A sub-folder that cannot be read is named in a warning, a folder given
    directly that cannot be read is an error. A file named explicitly is kept whatever its extension, so
    that loading it reports what is wrong.
    """
    if isinstance(paths_or_dirs, (str, os.PathLike)):
        paths_or_dirs = [paths_or_dirs]
    found: dict[Path, None] = {}
    for entry in map(Path, paths_or_dirs):
        if entry.is_dir():
            if not os.access(entry, os.R_OK | os.X_OK):
                raise PermissionError(f"cannot read folder {entry}: permission denied")
            for p in _FolderWalk(entry, recursive).images():
                found[p] = None
        elif entry.exists():
            found[entry] = None
        elif os.path.lexists(entry):
            raise FileNotFoundError(f"{entry}: a symbolic link that points nowhere or loops")
        else:
            raise FileNotFoundError(f"no such file or directory: {entry}")
    return list(found)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _within(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _FolderWalk:
    """The visible images under ``root``: its own folders first, then the links found there, each judged by
    real paths against everything walked so far (so no image is listed twice, and none under another label)."""

    def __init__(self, root: Path, recursive: bool) -> None:
        self.root, self.recursive = root, recursive
        self.top = os.path.realpath(root)
        self.walked: set[str] = set()
        self.files: list[Path] = []
        self.folder_links: list[tuple[Path, str]] = []  # (link, the real folder holding it)
        self.file_links: list[Path] = []
        self.skipped: list[str] = []

    def images(self) -> list[Path]:
        self._walk(self.root)
        while self.folder_links:  # links met in linked folders join the queue
            link, holder = self.folder_links.pop(0)
            target = os.path.realpath(link)
            why = self._refuse_folder(target, holder)
            if why:
                self.skipped.append(f"{link} -> {target} ({why})")
            else:
                self._walk(link)
        for link in self.file_links:
            target = os.path.realpath(link)
            if os.path.dirname(target) in self.walked and _is_image_name(os.path.basename(target)):
                self.skipped.append(f"{link} -> {target} (an image this listing already holds)")
            elif os.path.isfile(target):
                self.files.append(link)
        if self.skipped:
            more = f"; and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
            warnings.warn(f"{self.root}: not following {len(self.skipped)} symbolic link(s) that would list images "
                          f"twice or under another folder's name: {'; '.join(self.skipped[:10])}{more}", stacklevel=3)
        return sorted(self.files)

    def _refuse_folder(self, target: str, holder: str) -> str | None:
        """Why the folder link to ``target`` (found in real folder ``holder``) is not followed, or None."""
        if _within(self.top, target):
            return "the folder being listed or one above it"
        if _within(holder, target):
            return "a folder above the link: a loop"
        if any(_within(target, folder) for folder in self.walked):
            return "a folder this listing already walks"
        return None

    def _walk(self, start: Path) -> None:
        """Files and folders under ``start`` without entering links (kept for :meth:`images` to judge)."""
        for folder, dirs, names in os.walk(start, onerror=self._unreadable):
            real = os.path.realpath(folder)
            if real in self.walked:  # reached again below a linked folder
                dirs[:] = []
                continue
            self.walked.add(real)
            visible = sorted(d for d in dirs if not d.startswith(".")) if self.recursive else []
            links = {d for d in visible if os.path.islink(os.path.join(folder, d))}
            self.folder_links += [(Path(folder, d), real) for d in visible if d in links]
            dirs[:] = [d for d in visible if d not in links]
            for name in names:
                path = Path(folder, name)
                if not _is_image_name(name):
                    continue
                if path.is_symlink():
                    self.file_links.append(path)
                elif path.is_file():
                    self.files.append(path)

    @staticmethod
    def _unreadable(error: OSError) -> None:
        warnings.warn(f"skipping folder {error.filename}: cannot read it ({error.strerror})", stacklevel=6)


@runtime_checkable
class ImageSource(Protocol):
    """Anything that is not a file path but can give an image (a tar member, an in-memory array)."""

    def load(self) -> Image.Image: ...


class ImageSample(NamedTuple):
    """One item of :class:`ImageFiles`: ``image`` is None and ``error`` says why when the file is bad."""

    image: torch.Tensor | None
    index: int
    error: str | None


class ImageBatch(NamedTuple):
    """The good images of a batch, stacked, their dataset ``indices``, and ``(index, message)`` per bad file."""

    images: torch.Tensor
    indices: torch.Tensor
    errors: list[tuple[int, str]]


def _pixels_chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


class ImageFiles(torch.utils.data.Dataset):
    """Image files as tensors for a DataLoader that keeps going past bad files.

    ``paths`` are files or :class:`ImageSource` objects (tar members, arrays: ``resnets.data.source``).
    Each item is an :class:`ImageSample` ``(image, index, error)``: the RGB image through ``transform``
    (default: uint8 CHW pixels), or ``None`` with the :class:`ImageLoadError` text. Batch with
    :func:`collate_images`, e.g. ``DataLoader(ImageFiles(paths, IMAGENET_TORCH), batch_size=64,
    num_workers=4, collate_fn=collate_images)``; map ``indices`` back to ``dataset.paths``.
    """

    def __init__(self, paths: Sequence[str | os.PathLike | ImageSource],
                 transform: Callable[[Image.Image], torch.Tensor] | None = None, min_side: int | None = None) -> None:
        self.paths = [p if isinstance(p, ImageSource) else Path(p) for p in paths]
        self.transform = transform if transform is not None else _pixels_chw
        self.min_side = min_side  # reduced-scale JPEG decoding (load_img's min_side) for files

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> ImageSample:
        item = self.paths[index]
        try:
            img = item.load() if isinstance(item, ImageSource) else load_img(item, min_side=self.min_side)
        except ImageLoadError as e:
            return ImageSample(None, index, str(e))
        return ImageSample(self.transform(img), index, None)


def collate_images(samples: Sequence[ImageSample]) -> ImageBatch:
    """Stack the good samples; the bad ones go to ``errors`` so one bad file never drops the batch."""
    good = [s for s in samples if s.error is None]
    errors = [(s.index, s.error) for s in samples if s.error is not None]
    indices = torch.tensor([s.index for s in good], dtype=torch.long)
    if not good:
        return ImageBatch(torch.empty(0), indices, errors)
    shapes = {tuple(s.image.shape) for s in good}
    if len(shapes) > 1:
        raise BadInput(f"images in one batch differ in shape {sorted(shapes)}: use a transform with a fixed "
                         "crop size, or batch_size=1")
    return ImageBatch(torch.stack([s.image for s in good]), indices, errors)
