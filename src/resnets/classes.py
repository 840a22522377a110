"""Class lists of the pretrained models, and top-k decoding of their predictions into names.

The ImageNet list ships inside the package (``assets/imagenet_classes.tsv``: ``wnid<TAB>name`` in
index order, the order of torchvision's and Keras' checkpoints), so decoding needs no network.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch

from .errors import BadInput, JobFailed, UnknownName

#: CIFAR-10 in label order (alphabetical, the official order).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

ClassList = str | Sequence[str] | Sequence[tuple[str, str]] | None
# How far a row of probabilities may sum from 1 (bf16 softmax of 1000 classes stays well inside it).
SUM_TOLERANCE = 1e-2


@functools.cache
def _imagenet_table() -> tuple[tuple[str, str], ...]:
    text = resources.files("resnets").joinpath("assets", "imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t")) for line in text.splitlines() if line)
    if len(rows) != 1000 or any(len(row) != 2 for row in rows):
        raise JobFailed("resnets/assets/imagenet_classes.tsv is damaged: expected 1000 'wnid<TAB>name' lines")
    return rows


def imagenet_classes() -> list[tuple[str, str]]:
    """The 1000 ImageNet-1k classes as ``(wnid, name)`` in index order (0 = ``n01440764 tench``)."""
    return list(_imagenet_table())


@functools.cache
def imagenet_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order, as a weights entry holds them."""
    return tuple(name for _, name in _imagenet_table())


def class_names(classes: ClassList) -> tuple[str, ...]:
    """Any accepted form of class list as the tuple of names a weights entry holds: ``"imagenet"`` and
    ``"cifar10"`` spelled out, ``(id, name)`` pairs reduced to their names."""
    return tuple(name for _, name in _id_name_pairs(classes)[1])


def _id_name_pairs(classes: ClassList) -> tuple[str, list[tuple[str, str]]]:
    """``(label for messages, [(id, name), ...])`` for any accepted form of class list; the ImageNet names (as
    weights entries hold them) keep their wnids as ids."""
    given = None if isinstance(classes, str) or classes is None else tuple(classes)
    if classes is None or classes == "imagenet" or given == imagenet_names():
        return "ImageNet", imagenet_classes()
    if classes == "cifar10" or given == CIFAR10_CLASSES:
        return "CIFAR-10", [(str(i), name) for i, name in enumerate(CIFAR10_CLASSES)]
    if isinstance(classes, str):
        raise UnknownName(f"unknown class list {classes!r}: use 'imagenet', 'cifar10' or a sequence of names")
    pairs = [(str(i), c) if isinstance(c, str) else (str(c[0]), str(c[1])) for i, c in enumerate(classes)]
    return "the given", pairs


def class_aliases(classes: ClassList) -> list[tuple[str, ...]]:
    """Every name a class answers to, per index: its id (ImageNet wnid, or the index) and its name."""
    _, pairs = _id_name_pairs(classes)
    return [(cid, name) if cid != str(i) else (name,) for i, (cid, name) in enumerate(pairs)]


def _key(text: str) -> str:
    return text.replace("_", " ").strip().lower()


def class_index(classes: ClassList, text: str) -> int:
    """The class ``text`` names in ``classes``: an index, an id (wnid) or a name (case, ``_`` and spaces ignored)."""
    aliases = class_aliases(classes)
    if text.isdigit():
        if int(text) < len(aliases):
            return int(text)
        raise UnknownName(f"class index {text} is out of range: the model has {len(aliases)} classes")
    key = _key(text)
    for i, names in enumerate(aliases):
        if key in (_key(n) for n in names):
            return i
    raise UnknownName(f"no class named {text!r} among the model's {len(aliases)} classes")


def folder_class_indices(folder_classes: Sequence[str], model_classes: ClassList,
                         by_position: bool = False) -> list[int]:
    """Map a data set's class folder names to the model's output indices.

    Names are matched exactly to the model's class list (CIFAR-10 names, ImageNet wnids or names). A data set
    whose folders match none of them is refused, naming both lists, unless ``by_position``: then its
    classes in sorted order are the model's classes 0, 1, ... (as torchvision's ImageFolder numbers them).
    """
    names = class_aliases(model_classes)
    lookup = {alias: i for i, aliases in enumerate(names) for alias in aliases}
    if all(c in lookup for c in folder_classes):
        return [lookup[c] for c in folder_classes]
    if any(c in lookup for c in folder_classes):
        missing = [c for c in folder_classes if c not in lookup]
        raise BadInput(f"class folders {missing[:5]} are not among the model's classes")
    if len(folder_classes) > len(names):
        raise BadInput(f"the data has {len(folder_classes)} classes but the model only {len(names)}")
    if not by_position:
        def shown(items: list[str]) -> str:
            return ", ".join(items[:10]) + (f", ... ({len(items)} in all)" if len(items) > 10 else "")

        raise BadInput(f"none of the data's class folders ({shown(list(folder_classes))}) is one of the model's "
                         f"classes ({shown([a[-1] for a in names])}); to take them in sorted order as the model's "
                         "classes 0, 1, ... pass --by-position (by_position=True)")
    return list(range(len(folder_classes)))


def decode_predictions(preds: np.ndarray | torch.Tensor, top: int = 5, classes: ClassList = None, *,
                       multi_label: bool = False) -> list[list[tuple[str, str, float]]]:
    """Top-``top`` classes per row of probabilities ``preds`` (N, C), as Keras: ``[(id, name, score), ...]``, best
    first; ties go to the lower class index.

    ``classes``: ``None``/``"imagenet"`` (id is the wnid), ``"cifar10"``, a sequence of names (id is
    the index as a string) or of ``(id, name)`` pairs. ``preds`` must be probabilities: every score in [0, 1] and
    each row summing to 1 (within ``SUM_TOLERANCE``), or, with ``multi_label=True`` (a sigmoid head), only the
    former. Anything else is refused with ``BadInput`` rather than softmaxed here: the usual culprit is logits
    (``create_model(...).predict(x)``), and a silent softmax would hide from the caller that every other use of
    those numbers (thresholds, averages, a sigmoid model's scores) is wrong too. Keras' own decode_predictions
    prints whatever it is given.
    """
    if isinstance(preds, torch.Tensor):
        preds = preds.detach().to("cpu", torch.float64).numpy()
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 2:
        raise BadInput(f"decode_predictions expects predictions of shape (N, C), got shape {preds.shape}")
    label, pairs = _id_name_pairs(classes)
    if preds.shape[1] != len(pairs):
        raise BadInput(f"predictions have {preds.shape[1]} classes (shape {preds.shape}) but {label} class "
                         f"list has {len(pairs)}: pass the model's classes=")
    if top < 1:
        raise BadInput(f"top must be at least 1, got {top}")
    _check_probabilities(preds, multi_label)
    order = np.argsort(-preds, axis=1, kind="stable")[:, :top]
    return [[(*pairs[i], float(row[i])) for i in idx] for row, idx in zip(preds, order)]


def _check_probabilities(preds: np.ndarray, multi_label: bool) -> None:
    """``BadInput`` naming the first row of ``preds`` that is not probabilities, and what to do instead."""
    fix = ("decode_predictions takes probabilities: apply softmax first (torch.softmax(logits, 1)), or build the "
           "model with classifier_activation='softmax' (as resnets.ResNet50() does) so that predict returns them")
    outside = ~np.isfinite(preds) | (preds < 0) | (preds > 1)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise BadInput(f"predictions are not probabilities: row {row} holds {preds[row, col]:.4g} (class {col}), "
                       f"outside [0, 1] (logits?); {fix}")
    if multi_label:
        return
    sums = preds.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)
    if off.size:
        raise BadInput(f"predictions are not probabilities: row {off[0]} sums to {sums[off[0]]:.4g}, not 1; {fix}; "
                       "for a sigmoid head's independent scores pass multi_label=True")
