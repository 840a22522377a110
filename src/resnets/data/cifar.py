"""Small image data sets (CIFAR scale) decoded once into a cached uint8 NCHW tensor.

Sources: the official CIFAR python format (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``),
an image folder (``train/<class>/*``, ``test|val/<class>/*``), a ``.tar`` of such a tree, or a
folder holding ``train.tar``/``test.tar``.  Decoding happens once, on every core, and the result is
kept in ``~/.cache/resnets/data`` (or ``$RESNETS_CACHE``) keyed by the source's path, size and mtime,
so training spends its time on the network, not on JPEG decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..atomic import atomic_path
from ..cache import cache_root
from .images import to_rgb

SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}
CIFAR_PY_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_PY_TEST = ("test_batch",)


@dataclass
class ImageTensors:
    """A labelled image set held in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageTensors:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensors(self.images[idx], self.labels[idx], self.classes)

    def relabel(self, classes: Sequence[str]) -> ImageTensors:
        """The same images labelled by their class names' places in ``classes`` (the training split's list)."""
        return ImageTensors(self.images, labels_by_name(self.labels, self.classes, classes), tuple(classes))


def labels_by_name(labels: torch.Tensor, own: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    """``labels`` (indices into ``own``) as indices into ``classes``, matched by class name.

    A split's folders number its own classes; an evaluation split lacking or adding one would be
    numbered differently from training, so it is labelled by the training split's names instead.
    """
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({own[i] for i in labels.unique().tolist()} - index.keys())
    if unknown:
        raise ValueError(f"class {', '.join(map(repr, unknown))} is not among the training split's classes "
                         f"({', '.join(classes)})")
    return torch.tensor([index.get(name, -1) for name in own], dtype=torch.long)[labels]


def default_cache_dir() -> Path:
    return cache_root() / "data"


def load_image_tensors(
    source: str | os.PathLike,
    split: str = "train",
    *,
    image_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> ImageTensors:
    """The ``split`` ("train", "test" or "val") of ``source`` as tensors, decoding it only the first time."""
    if split not in SPLIT_ALIASES:
        raise ValueError(f"split must be one of {sorted(SPLIT_ALIASES)}, got {split!r}")
    origin = split_source(Path(source), split)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"{_cache_key(origin, split, image_size)}.safetensors"
    if cache_file.is_file():
        return _read_cache(cache_file)
    if (origin / "data_batch_1").is_file() or _is_cifar_python_archive(origin):
        data = _read_cifar_python(origin, split)
    else:
        data = _decode_tree(origin, split, image_size, workers)
    _write_cache(cache_file, data, origin)
    return data


# --- finding the files of a split ---------------------------------------------------


def split_source(path: Path, split: str) -> Path:
    """The file or folder that holds ``split``: a CIFAR python folder/archive, a split folder or a tar."""
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {path}")
    if path.is_file():
        return path
    if (path / "data_batch_1").is_file():
        return path
    if (path / "cifar-10-batches-py").is_dir():
        return path / "cifar-10-batches-py"
    if (path / "cifar-10-python.tar.gz").is_file():
        return path / "cifar-10-python.tar.gz"
    for name in SPLIT_ALIASES[split]:
        if (path / name).is_dir():
            return path / name
        for ext in (".tar", ".tar.gz", ".tgz"):
            if (path / f"{name}{ext}").is_file():
                return path / f"{name}{ext}"
    raise FileNotFoundError(
        f"{path}: no '{split}' data found; expected cifar-10-batches-py/, cifar-10-python.tar.gz, "
        f"{'|'.join(SPLIT_ALIASES[split])}/<class>/* or {split}.tar"
    )


def _is_cifar_python_archive(path: Path) -> bool:
    if not path.is_file() or not tarfile.is_tarfile(path):
        return False
    with tarfile.open(path) as tar:
        return any(Path(m.name).name == "data_batch_1" for m in tar.getmembers())


def _cache_key(origin: Path, split: str, image_size: int) -> str:
    stats = [origin.resolve()]
    if origin.is_dir():
        stats += sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in origin.iterdir())
    else:
        st = origin.stat()
        stats += [st.st_size, st.st_mtime_ns]
    return hashlib.sha256(repr((stats, split, image_size)).encode()).hexdigest()[:24]


# --- the CIFAR python format ----------------------------------------------------------


def _read_cifar_python(origin: Path, split: str) -> ImageTensors:
    names = CIFAR_PY_TRAIN if split == "train" else CIFAR_PY_TEST
    blobs = dict(_cifar_python_files(origin, (*names, "batches.meta")))
    missing = [n for n in names if n not in blobs]
    if missing:
        raise FileNotFoundError(f"{origin}: CIFAR python batches missing: {', '.join(missing)}")
    images, labels = [], []
    for name in names:
        batch = _unpickle(blobs[name], f"{origin}/{name}")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    meta = _unpickle(blobs["batches.meta"], f"{origin}/batches.meta") if "batches.meta" in blobs else {}
    classes = tuple(n.decode() for n in meta.get(b"label_names", [])) or tuple(str(i) for i in range(10))
    return ImageTensors(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes)


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
            raise pickle.UnpicklingError(f"refusing {module}.{name}: CIFAR batches hold only arrays, lists and bytes")
        return super().find_class(module.replace("numpy.core.", "numpy._core.") if module.startswith("numpy") else module,
                                  name)


def _unpickle(blob: bytes, where: str) -> dict:
    # The official batches are Python pickles of dicts of numpy arrays, lists and bytes.
    try:
        return _ArraysOnly(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:
        raise ValueError(f"{where}: not a CIFAR python batch: {e}") from e


# --- image trees (folders and tars) ---------------------------------------------------


def _decode_tree(origin: Path, split: str, image_size: int, workers: int | None) -> ImageTensors:
    files = sorted(_tree_files(origin, split))
    if not files:
        raise FileNotFoundError(f"{origin}: no images found for split '{split}' (expected <split>/<class>/<image>)")
    classes = tuple(sorted({cls for cls, _, _ in files}))
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[cls] for cls, _, _ in files], dtype=torch.long)
    jobs = [(name, blob, image_size) for _, name, blob in files]
    chunk = max(1, len(jobs) // (8 * (workers or os.cpu_count() or 1)))
    if len(jobs) < 256 or workers == 1:
        arrays = [_decode_one(job) for job in jobs]
    else:
        with Pool(workers or os.cpu_count()) as pool:
            arrays = pool.map(_decode_one, jobs, chunksize=chunk)
    return ImageTensors(torch.from_numpy(np.stack(arrays)), labels, classes)


def _tree_files(origin: Path, split: str) -> Iterator[tuple[str, str, bytes]]:
    """(class, name, encoded bytes) of every image of ``split``."""
    extensions = set(Image.registered_extensions())
    if origin.is_dir():
        for class_dir in sorted(p for p in origin.iterdir() if p.is_dir()):
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() in extensions:
                    yield class_dir.name, str(f), f.read_bytes()
        return
    with tarfile.open(origin) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or Path(member.name).suffix.lower() not in extensions or len(parts) < 2:
                continue
            in_split = any(p in SPLIT_ALIASES[split] for p in parts[:-2])
            if in_split or len(parts) == 2:
                yield parts[-2], f"{origin}:{member.name}", tar.extractfile(member).read()


def _decode_one(job: tuple[str, bytes, int]) -> np.ndarray:
    name, blob, size = job
    try:
        with Image.open(io.BytesIO(blob)) as img:
            img = to_rgb(ImageOps.exif_transpose(img))
            if img.size != (size, size):  # centre crop to a square, then resize: never distort the aspect ratio
                img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except Exception as e:
        raise ValueError(f"{name}: cannot decode image: {e}") from e


# --- the cache ------------------------------------------------------------------------


def _read_cache(path: Path) -> ImageTensors:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        classes = tuple(json.loads(f.metadata()["classes"]))
    tensors = load_file(str(path))
    return ImageTensors(tensors["images"], tensors["labels"], classes)


def _write_cache(path: Path, data: ImageTensors, origin: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"images": data.images.contiguous(), "labels": data.labels.contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"classes": json.dumps(list(data.classes)), "source": str(origin)})
