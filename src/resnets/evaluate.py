"""Top-1/top-5 accuracy of a model on a labelled image set (an image folder, a tar of one, CIFAR python)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .choices import TTA
from .classes import folder_class_indices
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


def _topk_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


def _check_tta(tta: str) -> None:
    if tta not in TTA:
        raise ValueError(f"tta must be one of {', '.join(TTA)}, got {tta!r}")


def predict_scores(inf: Inference, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Class scores of a batch: the model's outputs, or with ``tta="flip"`` the mean class probabilities of the
    images and their mirror images (test-time augmentation with the flip every recipe trains on; twice the
    compute)."""
    _check_tta(tta)
    if tta == "none":
        return run_model(inf.model, images)
    return (inf.probabilities(run_model(inf.model, images)) + inf.probabilities(run_model(inf.model, images.flip(-1)))) / 2


def evaluate(inf: Inference, data: str | os.PathLike, batch_size: int = 128, workers: int = 2,
             progress: bool = True, by_position: bool = False, tta: str = "none") -> Accuracy:
    """Accuracy on ``data``'s test (or val) split: an image folder (``<class>/<image>``, or its ``val``/``test``
    split), a tar of one, or CIFAR python batches (:mod:`resnets.data.source`).

    Every image is decoded with the model's own preprocessing (``inf.preprocessing``); unreadable ones
    are listed in ``errors``, not counted. ``by_position``: see :func:`resnets.classes.folder_class_indices`; ``tta``: see
    :func:`predict_scores`.
    """
    _check_tta(tta)  # before decoding anything
    images = read_split(Path(data), "test", flat=True)
    index = torch.tensor(folder_class_indices(list(images.classes), inf.classes, by_position))
    labels = index[images.labels]
    top1 = top5 = seen = 0
    errors: list[tuple[str, str]] = []
    bar = progress_bar(len(images), "eval", progress, unit="img")
    for batch, refs in inf.batches(images.images, batch_size, workers):
        errors += [(str(refs[i]), e) for i, e in batch.errors]
        if len(batch.indices):
            a, b = _topk_hits(predict_scores(inf, batch.images, tta), labels[batch.indices])
            top1, top5, seen = top1 + a, top5 + b, seen + len(batch.indices)
        bar.update(len(batch.indices) + len(batch.errors))
    bar.close()
    if not seen:
        raise ValueError(f"{images.origin}: no image could be evaluated ({len(errors)} unreadable)")
    return Accuracy(100 * top1 / seen, 100 * top5 / seen, seen, errors)
