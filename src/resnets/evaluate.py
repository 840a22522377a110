"""Top-1/top-5 accuracy of a model on a labelled image set (an image folder, a tar of one, CIFAR python)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .choices import TTA
from .classes import CIFAR10_CLASSES, imagenet_classes
from .data.source import read_split
from .pipeline import Inference, run_model
from .progress import progress_bar


@dataclass
class Accuracy:
    top1: float
    top5: float
    images: int
    errors: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return {"top1": round(self.top1, 4), "top5": round(self.top5, 4), "images": self.images,
                "errors": [{"path": p, "error": e} for p, e in self.errors]}


def class_index(folder_classes: list[str], model_classes, by_position: bool = False) -> list[int]:
    """Map the data set's class folder names to the model's output indices.

    Names are matched to the model's class list (CIFAR-10 names, ImageNet wnids or names). A data set
    whose folders match none of them is refused, naming both lists, unless ``by_position``: then its
    classes in sorted order are the model's classes 0, 1, ... (as torchvision's ImageFolder numbers them).
    """
    if model_classes == "cifar10":
        names = [[c] for c in CIFAR10_CLASSES]
    elif model_classes == "imagenet":
        names = [[wnid, name] for wnid, name in imagenet_classes()]
    else:
        names = [[c] if isinstance(c, str) else list(c) for c in model_classes]
    lookup = {alias: i for i, aliases in enumerate(names) for alias in aliases}
    if all(c in lookup for c in folder_classes):
        return [lookup[c] for c in folder_classes]
    if any(c in lookup for c in folder_classes):
        missing = [c for c in folder_classes if c not in lookup]
        raise ValueError(f"class folders {missing[:5]} are not among the model's classes")
    if len(folder_classes) > len(names):
        raise ValueError(f"the data has {len(folder_classes)} classes but the model only {len(names)}")
    if not by_position:
        def shown(items: list[str]) -> str:
            return ", ".join(items[:10]) + (f", ... ({len(items)} in all)" if len(items) > 10 else "")

        raise ValueError(f"none of the data's class folders ({shown(list(folder_classes))}) is one of the model's "
                         f"classes ({shown([a[-1] for a in names])}); to take them in sorted order as the model's "
                         "classes 0, 1, ... pass --by-position (by_position=True)")
    return list(range(len(folder_classes)))


def _topk_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


def _check_tta(tta: str) -> None:
    if tta not in TTA:
        raise ValueError(f"tta must be one of {', '.join(TTA)}, got {tta!r}")


def predict_scores(model: torch.nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Class scores of a batch: the logits, or with ``tta="flip"`` the mean softmax of the images and their
    mirror images (test-time augmentation with the flip every recipe trains on; twice the compute)."""
    _check_tta(tta)
    if tta == "none":
        return run_model(model, images)
    return (run_model(model, images).softmax(1) + run_model(model, images.flip(-1)).softmax(1)) / 2


def evaluate(inf: Inference, data: str | os.PathLike, batch_size: int = 128, workers: int = 2,
             progress: bool = True, by_position: bool = False, tta: str = "none") -> Accuracy:
    """Accuracy on ``data``'s test (or val) split: an image folder (``<class>/<image>``, or its ``val``/``test``
    split), a tar of one, or CIFAR python batches (:mod:`resnets.data.source`).

    Every image is decoded with the model's own preprocessing (``inf.preprocessing``); unreadable ones
    are listed in ``errors``, not counted. ``by_position``: see :func:`class_index`; ``tta``: see
    :func:`predict_scores`.
    """
    _check_tta(tta)  # before decoding anything
    images = read_split(Path(data), "test", flat=True)
    index = torch.tensor(class_index(list(images.classes), inf.classes, by_position))
    labels = index[images.labels]
    top1 = top5 = seen = 0
    errors: list[tuple[str, str]] = []
    bar = progress_bar(len(images), "eval", progress, unit="img")
    for batch, refs in inf.batches(images.images, batch_size, workers):
        errors += [(str(refs[i]), e) for i, e in batch.errors]
        if len(batch.indices):
            a, b = _topk_hits(predict_scores(inf.model, batch.images, tta), labels[batch.indices])
            top1, top5, seen = top1 + a, top5 + b, seen + len(batch.indices)
        bar.update(len(batch.indices) + len(batch.errors))
    bar.close()
    if not seen:
        raise ValueError(f"{images.origin}: no image could be evaluated ({len(errors)} unreadable)")
    return Accuracy(100 * top1 / seen, 100 * top5 / seen, seen, errors)
