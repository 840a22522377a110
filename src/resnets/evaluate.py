"""How good a model is on a labelled image set (an image folder, a tar of one, CIFAR python): top-1/top-5, with
``report=`` the full report (:mod:`resnets.report`), and the temperature that calibrates its probabilities
(:func:`calibrate`, ``resnets calibrate``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .calibration import N_BINS, ece, fit_temperature, nll, scaled_softmax
from .choices import TTA
from .classes import class_aliases, folder_class_indices
from .data.batches import file_batches
from .data.images import ImageBatch
from .data.source import ImageList, ImageRef, read_split
from .errors import BadInput, BadWeights, UnknownName
from .pipeline import Inference, load_inference, run_model
from .preprocess import Preprocessing
from .progress import progress_bar
from .report import WRONG, Evaluated, check_plot_extra, write_report
from .weights.checkpoint import infer_model_kwargs
from .weights.entry import WeightsEntry, save_safetensors
from .weights.loading import create_with_weights


@dataclass
class Accuracy:
    """Top-1/top-5 (percent) over ``images`` readable images; ``classes`` were scored: the data's, where they are
    a subset of the model's ``model_classes``; ``report``: the report's page, when one was written. ``top5`` is
    None where at most five classes were scored: every class is then in the top five, and 100% would say nothing."""

    top1: float
    top5: float | None
    images: int
    errors: list[tuple[str, str]]
    classes: int = 0
    model_classes: int = 0
    report: Path | None = None

    @property
    def subset(self) -> bool:
        """Whether the scores are over a subset of the model's classes (the data's)."""
        return self.classes < self.model_classes

    def to_dict(self) -> dict:
        return {"top1": round(self.top1, 4), "top5": None if self.top5 is None else round(self.top5, 4),
                "images": self.images,
                "classes": self.classes, "model_classes": self.model_classes,
                "errors": [{"path": p, "error": e} for p, e in self.errors],
                **({"report": str(self.report)} if self.report else {})}


def _topk_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


def _check_tta(tta: str) -> None:
    if tta not in TTA:
        raise UnknownName(f"tta must be one of {', '.join(TTA)}, got {tta!r}")


def predict_scores(inf: Inference, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Class scores of a batch: the model's outputs, or with ``tta="flip"`` the mean class probabilities of the
    images and their mirror images (test-time augmentation with the flip every recipe trains on; twice the
    compute), or with ``tta="ten-crop"`` of each image's ten crops (``images``: (N, 10, C, H, W) from
    :class:`TenCrop`; ten times the compute)."""
    _check_tta(tta)
    if tta == "none":
        return run_model(inf.model, images)
    if tta == "ten-crop":
        if images.ndim != 5 or images.shape[1] != 10:
            raise BadInput(f"tta='ten-crop' takes (N, 10, C, H, W) batches of TenCrop, got {tuple(images.shape)}")
        probs = inf.probabilities(run_model(inf.model, images.flatten(0, 1)))
        return probs.view(len(images), 10, -1).mean(dim=1)
    return (inf.probabilities(run_model(inf.model, images)) + inf.probabilities(run_model(inf.model, images.flip(-1)))) / 2


@dataclass(frozen=True)
class TenCrop:
    """The paper's 10-crop test (He et al. 2015, 3.4, after Krizhevsky et al. 2012): the image resized as
    ``preprocessing`` resizes it, its four corner and centre crops of the crop size, and their mirror images
    (torchvision's ``TenCrop``), normalised: a (10, 3, crop, crop) tensor."""

    preprocessing: Preprocessing

    def __call__(self, img) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        size = self.preprocessing.crop_size
        resized = dataclasses.replace(self.preprocessing, crop_size=None).crop(img)
        return self.preprocessing.normalize(torch.stack(F.ten_crop(resized, [size, size])))


def _ten_crop_batches(inf: Inference, paths: list[ImageRef], batch_size: int,
                      workers: int) -> Iterator[tuple[ImageBatch, list[ImageRef]]]:
    """:meth:`Inference.batches` with each image as its :class:`TenCrop` (its decoding, device and pinning)."""
    recipe = inf.preprocessing
    if recipe.crop_size is None:
        raise BadInput(f"tta='ten-crop' needs weights whose preprocessing has a crop size; {inf.name}'s has none")
    min_side = (recipe.resize_size or recipe.crop_size) if inf.fast_decode else None
    return file_batches(paths, TenCrop(recipe), batch_size, workers, pin_memory=inf.device.type == "cuda",
                        min_side=min_side)


@dataclass
class _Scored:
    """One pass over a labelled split: the scores and label (a model class index) of every readable image."""

    scores: torch.Tensor  # (N, C) float32
    labels: torch.Tensor  # (N,)
    images: list[ImageRef]
    errors: list[tuple[str, str]]


def _score(inf: Inference, images: ImageList, labels: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor],
           batch_size: int, workers: int, progress: bool, what: str, ten_crop: bool = False) -> _Scored:
    """``run`` on every image of ``images`` (decoded with the model's preprocessing, or as its :class:`TenCrop`),
    its rows kept in memory ((N, C) float32: 200 MB for 50,000 images of 1,000 classes); unreadable images are
    listed, not scored."""
    rows, kept, errors = [], [], []
    bar = progress_bar(len(images), what, progress, unit="img")
    batches = (_ten_crop_batches(inf, images.images, batch_size, workers) if ten_crop
               else inf.batches(images.images, batch_size, workers))
    for batch, refs in batches:
        errors += [(str(refs[i]), e) for i, e in batch.errors]
        if len(batch.indices):
            rows.append(run(batch.images))
            kept.append(batch.indices)
        bar.update(len(batch.indices) + len(batch.errors))
    bar.close()
    if not rows:
        raise BadInput(f"{images.origin}: no image could be evaluated ({len(errors)} unreadable)")
    index = torch.cat(kept)
    return _Scored(torch.cat(rows), labels[index], [images.images[i] for i in index.tolist()], errors)


def evaluate(inf: Inference | str | os.PathLike, data: str | os.PathLike, batch_size: int = 128, workers: int = 2,
             progress: bool = True, by_position: bool = False, tta: str = "none",
             report: str | os.PathLike | None = None, wrong: int = WRONG) -> Accuracy:
    """Accuracy of ``inf`` (an :class:`Inference`, or weights: a catalogue name or file, as ``resnets eval
    --weights`` takes them) on ``data``'s test (or val) split: an image folder (``<class>/<image>``, or its ``val``/``test``
    split), a tar of one, or CIFAR python batches (:mod:`resnets.data.source`).

    Every image is decoded with the model's own preprocessing (``inf.preprocessing``); unreadable ones
    are listed in ``errors``, not counted. ``by_position``: see :func:`resnets.classes.folder_class_indices`; ``tta``: see
    :func:`predict_scores`. Where the data's classes are a subset of the model's (ImageNet-A or -R: 200 of 1,000),
    every score is taken over the data's classes only: the others' outputs are ignored.

    ``report``: a folder to write the full report into (:func:`resnets.report.write_report`: per-class scores,
    NLL, Brier, ECE/MCE, the confusion matrix, the reliability diagram and the ``wrong`` most confidently wrong
    images; needs matplotlib, the ``plot`` extra).
    """
    _check_tta(tta)  # before decoding anything
    if report is not None:
        check_plot_extra()
        if wrong < 0:
            raise BadInput(f"wrong must be >= 0, got {wrong}")
    if not isinstance(inf, Inference):
        inf = load_inference(None, inf)
    images = read_split(Path(data), "test", flat=True)
    index = folder_class_indices(list(images.classes), inf.classes, by_position)
    scored = _score(inf, images, torch.tensor(index)[images.labels], lambda x: predict_scores(inf, x, tta),
                    batch_size, workers, progress, "eval", ten_crop=tta == "ten-crop")
    model_classes = scored.scores.shape[1]
    columns = sorted(set(index))  # the model's classes the data has
    scores, labels = scored.scores, scored.labels
    if len(columns) < model_classes:
        position = torch.full((model_classes,), -1, dtype=torch.long)
        position[columns] = torch.arange(len(columns))
        scores, labels = scores[:, columns], position[labels]
    top1, top5 = _topk_hits(scores, labels)
    seen = len(labels)
    acc = Accuracy(100 * top1 / seen, 100 * top5 / seen if len(columns) > 5 else None, seen, scored.errors,
                   len(columns), model_classes)
    if report is not None:
        probs = inf.probabilities(scores) if tta == "none" else scores
        if acc.subset:  # a distribution over the data's classes (a no-op for a softmax of the kept logits)
            probs = probs / probs.sum(dim=1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny)
        aliases = class_aliases(inf.classes)
        names = ([images.classes[index.index(c)] for c in columns] if by_position
                 else [aliases[c][-1] for c in columns])
        summary = {"model": inf.name, "weights": inf.weights, "data": str(images.origin), "tta": tta,
                   "precision": inf.precision, "backend": inf.backend, "temperature": inf.temperature,
                   "subset": _subset_note(acc), **acc.to_dict()}
        acc.report = write_report(report, Evaluated(probs, labels, names, scored.images), summary, wrong)
    return acc


def _subset_note(acc: Accuracy) -> str | None:
    """What the report says of a class-subset evaluation (None for none)."""
    if not acc.subset:
        return None
    return (f"The data has {acc.classes} of the model's {acc.model_classes} classes: every score here is over "
            f"those {acc.classes} only (the other classes' outputs are ignored; probabilities are renormalised "
            "over the data's classes).")


@dataclass
class Calibrated:
    """What :func:`calibrate` fitted and wrote: the temperature and the new model file, whose
    :class:`~resnets.weights.entry.WeightsEntry` holds both and, as ``calibration``, ``record``."""

    path: Path
    temperature: float
    record: dict[str, Any]


def calibrate(inf: Inference, data: str | os.PathLike, out: str | os.PathLike, val_split: int = 0,
              seed: int | None = None, batch_size: int = 128, workers: int = 2, progress: bool = True,
              by_position: bool = False) -> Calibrated:
    """Fit the softmax temperature of ``inf``'s weights on held-out images of ``data`` and write them, with it,
    to ``out`` (a ``.safetensors`` model file that every reader then takes: predict, eval, serve, Ray, the
    Keras-style ``predict`` all divide the logits by it).

    The held-out images: ``data``'s val (or test) split, or with ``val_split=N`` N images of its training split
    held out as ``resnets train --val-split N`` holds them out (``seed``: that run's seed; default the seed the
    weights record, else 0). Never fit on the images you will report the calibrated scores on. The temperature
    is fitted on the eager fp32 network's logits; the file records it with the ECE and NLL before (at the
    weights' own temperature) and after, on those images.
    """
    network = inf.network if inf.network is not None else inf.model
    cfg = getattr(network, "pretrained_cfg", None)
    if cfg is None:
        raise BadInput("calibrate needs weights= (a registry name or a file): the temperature is recorded in the "
                       "model file written from them")
    if getattr(network, "classifier_activation", None) is not None:
        raise BadInput("calibrate fits a temperature on logits: load the network without classifier_activation")
    if val_split < 0:
        raise BadInput(f"val_split must be >= 0, got {val_split}")
    if val_split:
        seed = int(cfg.training.get("seed", 0)) if seed is None else seed
        held, _ = read_split(Path(data), "train").held_out(val_split, seed)
        split = f"{val_split} images of its training split held out with seed {seed}, as resnets train --val-split"
    else:
        held = read_split(Path(data), "val", flat=True)
        split = f"its val or test split, {held.origin}"
    index = torch.tensor(folder_class_indices(list(held.classes), inf.classes, by_position))
    scored = _score(inf, held, index[held.labels], lambda x: run_model(network, x), batch_size, workers, progress,
                    "calibrate")
    logits, labels = scored.scores, scored.labels
    temperature = fit_temperature(logits, labels)
    before, after = scaled_softmax(logits, inf.temperature), scaled_softmax(logits, temperature)
    record = {"method": "temperature scaling (Guo et al. 2017): the one T minimising the NLL, by L-BFGS",
              "data": str(data), "split": split, "images": len(labels), "unreadable": len(scored.errors),
              "n_bins": N_BINS, "temperature_before": inf.temperature,
              "ece_before": ece(before, labels), "ece_after": ece(after, labels),
              "nll_before": nll(before, labels), "nll_after": nll(after, labels)}
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    entry = dataclasses.replace(
        cfg, url=None, sha256=None, md5=None, asset=None, file_format="safetensors", file_size_mb=None,
        model_kwargs={**infer_model_kwargs(state), **cfg.model_kwargs}, temperature=temperature, calibration=record,
        source=f"{cfg.source}; temperature-scaled by resnets calibrate on {data} ({split})")
    path = save_safetensors(state, out, entry)
    _check_reloads(path, network, entry)
    return Calibrated(path, temperature, record)


def _check_reloads(path: Path, network: torch.nn.Module, entry: WeightsEntry) -> None:
    """The written file must give back the same network and temperature; otherwise it is removed."""
    reloaded = create_with_weights(entry.model, path).eval()
    x = torch.randn(2, *network.input_size)
    if reloaded.temperature != entry.temperature or not torch.allclose(run_model(reloaded, x), run_model(network, x),
                                                                       atol=1e-5):
        path.unlink(missing_ok=True)
        raise BadWeights(f"{path}: the calibrated file would not load back as the same network, so it was not kept")
