"""What a model file is: the one description every weights file carries and every reader uses.

A :class:`WeightsEntry` says everything needed to use a set of weights faithfully: the architecture
(registry name and keyword arguments), the class names in label order, the evaluation preprocessing
actually used, the metrics with the data they were measured on, how the weights were made and their
licence. The published files get theirs from the catalogue (:mod:`.registry`); every file this package
writes (``resnets train``'s ``model.safetensors``/``best.safetensors``, ``weights convert``) carries its
entry as JSON in the safetensors metadata, written and read only here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import BadInput, BadWeights
from ..atomic import atomic_path
from ..classes import class_names, imagenet_names
from ..preprocess import CIFAR10, IMAGENET_TORCH, Preprocessing

FileFormat = Literal["torch", "keras_h5", "safetensors"]
META_KEY = "resnets.weights_entry"  # safetensors metadata key holding a WeightsEntry as JSON
# Keys of the trainer's metadata before it wrote entries (still read, so old run folders keep loading).
_LEGACY_TRAIN_KEYS = ("model", "classes", "normalize")


@dataclass(frozen=True)
class WeightsEntry:
    """One set of weights and how to use it.

    ``sha256`` is the full hex digest or, when only that is published (torch.hub's file-name
    convention), its leading hex digits; ``md5`` is for publishers (Keras) that only give an md5.
    ``asset`` names a file shipped inside the package (``resnets/assets/``) instead of a URL.
    ``metrics`` (percentages, e.g. ``top1``) were measured on ``metrics_data``; ``source`` says how the
    weights were made; ``training`` holds a training run's own record (recipe, epoch, step, eval error).
    ``temperature`` divides the logits before every softmax that makes probabilities (``resnets calibrate``
    fits it; 1.0 leaves them as trained), and ``calibration`` records that fit (data, images, ECE and NLL
    before and after).
    """

    name: str
    model: str
    url: str | None
    sha256: str | None
    file_format: FileFormat
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = IMAGENET_TORCH
    classes: tuple[str, ...] = field(default_factory=imagenet_names)
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""
    license: str = ""
    asset: str | None = None
    md5: str | None = None
    file_size_mb: float | None = None
    metrics_data: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise BadInput(f"temperature must be a positive finite number, got {t!r}")
        object.__setattr__(self, "classes", class_names(self.classes))

    def with_new_head(self, num_classes: int) -> WeightsEntry:
        """This entry for the same weights under a fresh classifier of ``num_classes`` (0: none): the class names,
        metrics and calibration were the old head's and no longer apply."""
        return dataclasses.replace(self, model_kwargs={**self.model_kwargs, "num_classes": num_classes}, classes=(),
                                   metrics={}, metrics_data="", temperature=1.0, calibration={})

    @property
    def filename(self) -> str:
        """The file's name in the cache (the URL's last part) or in the package assets."""
        if self.asset:
            return self.asset
        if not self.url:
            raise BadWeights(f"weights {self.name!r} have neither a URL nor a packaged file")
        return self.url.rsplit("/", 1)[-1]

    @property
    def num_classes(self) -> int:
        if "num_classes" in self.model_kwargs:
            return int(self.model_kwargs["num_classes"])
        return len(self.classes)

    def to_json(self) -> str:
        """The entry as JSON, to travel inside a safetensors file's metadata."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WeightsEntry:
        """The entry :meth:`to_json` wrote; malformed text raises ``ValueError`` naming the field."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadWeights(f"metadata is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise BadWeights(f"metadata should be a JSON object, found {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadWeights(f"unknown field(s) {', '.join(unknown)} (written by a newer resnets?)")
        missing = [f for f in ("name", "model", "preprocessing", "classes") if f not in d]
        if missing:
            raise BadWeights(f"missing field(s) {', '.join(missing)}")
        d.setdefault("url", None)
        d.setdefault("sha256", None)
        d.setdefault("file_format", "safetensors")
        try:
            p = d.pop("preprocessing")
            pre = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})
        except (TypeError, ValueError, AttributeError) as e:
            raise BadWeights(f"field 'preprocessing' is malformed: {e}") from None
        classes = d.pop("classes")
        if not isinstance(classes, str) and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise BadWeights("field 'classes' must be 'imagenet', 'cifar10' or a list of names")
        if not all(isinstance(d.get(k, {}), dict) for k in ("model_kwargs", "metrics", "calibration")):
            raise BadWeights("fields 'model_kwargs', 'metrics' and 'calibration' must be JSON objects")
        return cls(**d, preprocessing=pre, classes=classes if isinstance(classes, str) else tuple(classes))


def entry_from_metadata(meta: dict[str, str], path: Path) -> WeightsEntry | None:
    """The entry in a safetensors file's metadata (also the trainer's older format), or None."""
    try:
        if META_KEY in meta:
            return WeightsEntry.from_json(meta[META_KEY])
        if all(k in meta for k in _LEGACY_TRAIN_KEYS):
            return _legacy_train_entry(meta, path)
    except (ValueError, KeyError, TypeError) as e:
        raise BadWeights(f"{path}: damaged resnets metadata: {e}") from None
    return None


def _legacy_train_entry(meta: dict[str, str], path: Path) -> WeightsEntry:
    """An entry for a file written by ``resnets train`` before entries: channel mean/std normalisation only."""
    values = {k: json.loads(v) if k not in ("model", "recipe", "normalize", "eval_split") else v
              for k, v in meta.items()}
    if values["normalize"] != "channel":
        raise BadWeights("this old training file used per-pixel mean normalisation, which it did not record; "
                         "retrain, or load it with create_model and preprocess by hand")
    preprocessing = dataclasses.replace(CIFAR10, mean=tuple(values["mean"]), std=tuple(values["std"]))
    classes = tuple(values["classes"])
    return WeightsEntry(
        name=path.name, model=values["model"], url=None, sha256=None, file_format="safetensors",
        model_kwargs={"num_classes": len(classes)}, preprocessing=preprocessing, classes=classes,
        source=f"resnets train, recipe {values.get('recipe')}", training={"epoch": values.get("epoch")},
    )


def save_safetensors(
    state_dict: dict[str, torch.Tensor], path: str | os.PathLike, entry: WeightsEntry | None = None
) -> Path:
    """Write ``state_dict`` (and ``entry`` as metadata) to ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    metadata = {META_KEY: entry.to_json()} if entry is not None else None
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path
