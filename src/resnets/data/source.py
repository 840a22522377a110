"""What is in a data set: the images, labels and class names of one split of a folder, tar or CIFAR pickle.

The one answer every job reads (training in either storage mode, ``resnets eval``):

* an image folder: ``<split>/<class>/<image>`` (``test`` also found as ``val`` and the other way round),
  or, for evaluation, ``<class>/<image>`` directly;
* a ``.tar`` (or ``.tar.gz``) of such a tree, or a folder holding ``train.tar``/``test.tar``;
* the official CIFAR python format: ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``;
* WebDataset shards written by ``resnets data shards`` (:mod:`resnets.data.shards`: a ``<split>.json`` sidecar beside
  ``<split>-NNNNNN.tar``), listed here member by member, which training and eval read like any other set
  (``shards.ShardStream``, webdataset-style sequential streaming, is not yet the trainer's);
* ILSVRC-2012 as downloaded (:mod:`resnets.data.imagenet`): wnid class folders are numbered in the catalogue's
  order of the 1,000 classes, and a flat ``val/`` is labelled by the devkit's or Kaggle's ground truth.

Hidden files and folders (``.name``, e.g. ``.ipynb_checkpoints/``, macOS ``._x.jpg``) are ignored
everywhere; a folder split is walked once by :func:`~resnets.data.images.find_images`, whose link rule keeps
a link (``ln -s .. train/cat/loop``) from listing images twice or under another class. Images are only
listed here; decoding goes through :func:`resnets.data.images.load_img`, whose :class:`ImageLoadError`
names the file (``archive.tar:member`` inside a tar), so a bad image is reported and skipped, never the
end of a whole set.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import BadInput, UnknownName
from .images import IMAGE_EXTENSIONS, ImageLoadError, find_images, load_img
from .imagenet import catalogue_labels, catalogue_wnids, flat_val_wnids, is_wnid_set
from .shards import read_index, sidecar

SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}
CIFAR_PY_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_PY_TEST = ("test_batch",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class TarMember:
    """One image inside an uncompressed tar, read by offset (cheap in any process, no open archive kept)."""

    tar: str
    member: str
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.tar}:{self.member}"

    def encoded(self) -> bytes:
        with open(self.tar, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def load(self) -> Image.Image:
        return _load_bytes(self.encoded(), str(self))


@dataclass(frozen=True)
class EncodedImage:
    """An image whose encoded bytes are held in memory (members of a compressed tar)."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name

    def encoded(self) -> bytes:
        return self.data

    def load(self) -> Image.Image:
        return _load_bytes(self.data, self.name)


@dataclass(frozen=True)
class ArrayImage:
    """A decoded uint8 CHW image (the CIFAR python batches), named by its batch and index."""

    name: str
    pixels: np.ndarray

    def __str__(self) -> str:
        return self.name

    def load(self) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.pixels.transpose(1, 2, 0)))


ImageRef = Path | TarMember | EncodedImage | ArrayImage


def load_image(ref: ImageRef) -> Image.Image:
    """Upright RGB pixels of any listed image; failures raise :class:`ImageLoadError` naming it."""
    return load_img(ref) if isinstance(ref, Path) else ref.load()


def _load_bytes(data: bytes, name: str) -> Image.Image:
    try:
        return load_img(io.BytesIO(data))
    except ImageLoadError as e:
        raise ImageLoadError(name, e.reason) from None


@dataclass
class ImageList:
    """A labelled split as references to its images (nothing decoded): ``labels[i]`` indexes ``classes``."""

    images: list[ImageRef]
    labels: torch.Tensor
    classes: tuple[str, ...]
    origin: Path

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageList:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageList([self.images[i] for i in idx.tolist()], self.labels[idx], self.classes, self.origin)

    def held_out(self, count: int, seed: int) -> tuple[ImageList, ImageList]:
        """``(held out, rest)``: ``count`` images drawn by ``seed`` (the last ``count`` of a seeded permutation, as
        ``resnets train --val-split`` holds them out) and the others."""
        if not 0 < count < len(self):
            raise BadInput(f"{self.origin}: cannot hold out {count} of its {len(self)} images")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(perm[-count:]), self.subset(perm[:-count])

    def relabel(self, classes: Sequence[str]) -> ImageList:
        """The same images labelled by their class names' places in ``classes`` (the training split's list)."""
        return ImageList(self.images, labels_by_name(self.labels, self.classes, classes), tuple(classes), self.origin)


def labels_by_name(labels: torch.Tensor, own: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    """``labels`` (indices into ``own``) as indices into ``classes``, matched by class name.

    A split's folders number its own classes; an evaluation split lacking or adding one would be
    numbered differently from training, so it is labelled by the training split's names instead.
    """
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({own[i] for i in labels.unique().tolist()} - index.keys())
    if unknown:
        raise BadInput(f"class {', '.join(map(repr, unknown))} is not among the training split's classes "
                         f"({', '.join(classes)})")
    return torch.tensor([index.get(name, -1) for name in own], dtype=torch.long)[labels]


def split_source(path: Path, split: str, flat: bool = False) -> Path:
    """The file or folder that holds ``split``: a CIFAR python folder/archive, a split folder or a tar.

    ``flat``: a folder of class folders with no split folder is itself the split (evaluation).
    """
    if split not in SPLIT_ALIASES:
        raise UnknownName(f"split must be one of {sorted(SPLIT_ALIASES)}, got {split!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {path}")
    if path.is_file() or (path / "data_batch_1").is_file():
        return path
    if (path / "cifar-10-batches-py").is_dir():
        return path / "cifar-10-batches-py"
    if (path / "cifar-10-python.tar.gz").is_file():
        return path / "cifar-10-python.tar.gz"
    for name in SPLIT_ALIASES[split]:
        if (path / name).is_dir():
            return path / name
        for ext in TAR_SUFFIXES:
            if (path / f"{name}{ext}").is_file():
                return path / f"{name}{ext}"
    if flat and any((p.is_dir() and not p.name.startswith(".")) or _visible_image(p.name) for p in path.iterdir()):
        return path
    raise FileNotFoundError(
        f"{path}: no '{split}' data found; expected cifar-10-batches-py/, cifar-10-python.tar.gz, "
        f"{'|'.join(SPLIT_ALIASES[split])}/<class>/* or {split}.tar"
    )


def read_split(source: str | os.PathLike, split: str, flat: bool = False) -> ImageList:
    """The images, labels and classes of ``split`` of ``source`` (see the module docstring for the layouts)."""
    if split in SPLIT_ALIASES and Path(source).is_dir():
        for name in SPLIT_ALIASES[split]:
            shards = sidecar(source, name)
            if shards is not None:
                return _read_shards(shards)
    origin = split_source(Path(source), split, flat)
    if (origin / "data_batch_1").is_file() or _is_cifar_python_archive(origin):
        return _read_cifar_python(origin, split)
    entries = sorted(_folder_entries(origin) if origin.is_dir() else _tar_entries(origin, split),
                     key=lambda e: (e[0], str(e[1])))
    if not entries:
        raise FileNotFoundError(f"{origin}: no images found for split '{split}' (expected <split>/<class>/<image>)")
    found = sorted({cls for cls, _ in entries})
    if is_wnid_set(found):  # ImageNet: the catalogue's numbering, whichever wnids are here
        classes = catalogue_wnids()
        labels = torch.tensor(catalogue_labels([cls for cls, _ in entries], origin), dtype=torch.long)
    else:
        classes = tuple(found)
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[cls] for cls, _ in entries], dtype=torch.long)
    return ImageList([ref for _, ref in entries], labels, classes, origin)


def _folder_entries(origin: Path) -> list[tuple[str, Path]]:
    """(class, image) of ``<class>/.../<image>`` under ``origin``, in one :func:`find_images` walk of the whole
    split, so that no link can list another class's images (or the split again) under a class. A folder of
    images and no class folders is ILSVRC-2012's flat ``val/``: its wnids come from the ground truth near it."""
    for class_dir in origin.iterdir():  # a class folder it cannot read is an error, not a class less
        if class_dir.is_dir() and not class_dir.name.startswith(".") and not os.access(class_dir, os.R_OK | os.X_OK):
            raise PermissionError(f"cannot read class folder {class_dir}: permission denied")
    images = find_images(origin)
    classed = [(path.relative_to(origin).parts[0], path) for path in images if path.parent != origin]
    if classed or not images:
        return classed
    return list(zip(flat_val_wnids(origin, images), images))


def _read_shards(path: Path) -> ImageList:
    """Every sample of a split's WebDataset shards as a member of an uncompressed tar (read by offset), with its
    label, so a shard folder also serves where a listed data set is needed (memory mode, evaluation)."""
    index = read_index(path)
    images: list[ImageRef] = []
    labels: list[int] = []
    for shard in index.shards:
        try:
            with tarfile.open(shard) as tar:
                members = {m.name: m for m in tar if m.isfile()}
            with open(shard, "rb") as f:
                for name, member in members.items():
                    ext = name.rpartition("/")[2].partition(".")[2]
                    if ext == "cls":
                        continue
                    label = members.get(name[: len(name) - len(ext)] + "cls")
                    if label is None:
                        raise BadInput(f"{shard}: sample {name} has no .cls label")
                    f.seek(label.offset_data)
                    labels.append(int(f.read(label.size)))
                    images.append(TarMember(str(shard), name, member.offset_data, member.size))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise BadInput(f"{shard}: damaged or truncated shard: {e}") from None
    return ImageList(images, torch.tensor(labels, dtype=torch.long), index.classes, path.parent)


def _visible_image(name: str) -> bool:
    parts = Path(name).parts
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in parts)


def _tar_entries(origin: Path, split: str) -> Iterator[tuple[str, ImageRef]]:
    """(class, image) of the tar's ``[...]/<split>/<class>/<image>`` members (or ``<class>/<image>``)."""
    compressed = not origin.name.endswith(".tar")
    try:
        with tarfile.open(origin) as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 2 or not _visible_image(member.name):
                    continue
                if not (any(p in SPLIT_ALIASES[split] for p in parts[:-2]) or len(parts) == 2):
                    continue
                if compressed:
                    ref: ImageRef = EncodedImage(f"{origin}:{member.name}", tar.extractfile(member).read())
                else:
                    ref = TarMember(str(origin), member.name, member.offset_data, member.size)
                yield parts[-2], ref
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadInput(f"{origin}: damaged or truncated tar archive: {e}") from None


def _is_cifar_python_archive(path: Path) -> bool:
    if not path.is_file() or not path.name.endswith((".tar.gz", ".tgz")):
        return False
    try:
        with tarfile.open(path) as tar:
            return any(Path(m.name).name == "data_batch_1" for m in tar.getmembers())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadInput(f"{path}: damaged or truncated tar archive: {e}") from None


def _read_cifar_python(origin: Path, split: str) -> ImageList:
    names = CIFAR_PY_TRAIN if split == "train" else CIFAR_PY_TEST
    blobs = dict(_cifar_python_files(origin, (*names, "batches.meta")))
    missing = [n for n in names if n not in blobs]
    if missing:
        raise FileNotFoundError(f"{origin}: CIFAR python batches missing: {', '.join(missing)}")
    images: list[ImageRef] = []
    labels: list[np.ndarray] = []
    for name in names:
        batch = _unpickle(blobs[name], f"{origin}/{name}")
        pixels = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        images += [ArrayImage(f"{origin}/{name}[{i}]", p) for i, p in enumerate(pixels)]
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    meta = _unpickle(blobs["batches.meta"], f"{origin}/batches.meta") if "batches.meta" in blobs else {}
    classes = tuple(n.decode() for n in meta.get(b"label_names", [])) or tuple(str(i) for i in range(10))
    return ImageList(images, torch.from_numpy(np.concatenate(labels)), classes, origin)


def _cifar_python_files(origin: Path, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    if origin.is_dir():
        for name in names:
            if (origin / name).is_file():
                yield name, (origin / name).read_bytes()
        return
    with tarfile.open(origin) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in names:
                yield name, tar.extractfile(member).read()


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else, so a file cannot run code."""

    ALLOWED = {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
        for name in ("_reconstruct", "scalar", "_frombuffer")
    } | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # protocol 2 spells bytes via encode

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise BadInput(f"refusing {module}.{name}: CIFAR batches hold only arrays, lists and bytes")
        return super().find_class(module.replace("numpy.core.", "numpy._core.") if module.startswith("numpy") else module,
                                  name)


def _unpickle(blob: bytes, where: str) -> dict:
    # The official batches are Python pickles of dicts of numpy arrays, lists and bytes.
    try:
        return _ArraysOnly(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:
        raise BadInput(f"{where}: not a CIFAR python batch: {e}") from e
