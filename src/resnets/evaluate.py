"""Top-1/top-5 accuracy of a model on a labelled image set (an image folder, a tar of one, CIFAR python)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .classes import CIFAR10_CLASSES, imagenet_classes
from .data.images import find_images
from .pipeline import Inference, file_batches, run_model


@dataclass
class Accuracy:
    top1: float
    top5: float
    images: int
    errors: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return {"top1": round(self.top1, 4), "top5": round(self.top5, 4), "images": self.images,
                "errors": [{"path": p, "error": e} for p, e in self.errors]}


def class_index(folder_classes: list[str], model_classes) -> list[int]:
    """Map the data set's class folder names to the model's output indices.

    Names are matched to the model's class list (CIFAR-10 names, ImageNet wnids or names); a data
    set whose folders match none of them is taken in sorted order, as torchvision's ImageFolder does.
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
    return list(range(len(folder_classes)))


def _topk_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


def _folder_split(root: Path) -> Path:
    for split in ("val", "test"):
        if (root / split).is_dir():
            return root / split
    return root


def evaluate(inf: Inference, data: str | os.PathLike, batch_size: int = 128, workers: int = 2,
             progress: bool = True) -> Accuracy:
    """Accuracy on ``data``: a folder of ``<class>/<image>`` (or its ``val``/``test`` split), or a tar
    or CIFAR python archive (decoded once into the tensor cache of :mod:`resnets.data.cifar`)."""
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"no such data set: {root}")
    top1 = top5 = seen = 0
    errors: list[tuple[str, str]] = []
    if root.is_dir() and not (root / "data_batch_1").exists() and not any(root.glob("*.tar*")):
        split = _folder_split(root)
        folders = sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise ValueError(f"{split}: expected one sub-folder per class")
        index = class_index(folders, inf.classes)
        paths, labels = [], []
        for label, folder in zip(index, folders):
            files = find_images(split / folder)
            paths += files
            labels += [label] * len(files)
        labels_t = torch.tensor(labels)
        bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="eval")
        for batch, all_paths in file_batches(paths, inf.preprocessing, batch_size, workers,
                                             pin_memory=inf.device.type == "cuda"):
            errors += [(str(all_paths[i]), e) for i, e in batch.errors]
            if len(batch.indices):
                a, b = _topk_hits(run_model(inf.model, batch.images), labels_t[batch.indices])
                top1, top5, seen = top1 + a, top5 + b, seen + len(batch.indices)
            bar.update(len(batch.indices) + len(batch.errors))
        bar.close()
    else:
        from .data.cifar import load_image_tensors

        data_set = load_image_tensors(root, split="test")
        index = torch.tensor(class_index(list(data_set.classes), inf.classes))
        for images, labels in zip(tqdm(data_set.images.split(batch_size), disable=not progress, desc="eval"),
                                  data_set.labels.split(batch_size)):
            a, b = _topk_hits(run_model(inf.model, inf.preprocessing(images)), index[labels])
            top1, top5, seen = top1 + a, top5 + b, seen + len(labels)
    if not seen:
        raise ValueError(f"{root}: no image could be evaluated ({len(errors)} unreadable)")
    return Accuracy(100 * top1 / seen, 100 * top5 / seen, seen, errors)
