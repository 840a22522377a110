"""Build a model around pretrained weights: a registry name, a Hugging Face Hub repo (:mod:`.hub`) or a local file.

The architecture comes from the registry entry or from the file itself (its recorded entry, or what
its tensors show: a Keras file means stride-in-1x1 and Keras' BN epsilon, a CIFAR checkpoint means
option-A shortcuts, the classifier size is the file's); the caller's keyword arguments override both.
A file that does not fit is reported by its first offending tensor, with both shapes.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BadInput, BadWeights, UnknownName
from ..preprocess import CIFAR10, IMAGENET_CAFFE, IMAGENET_TF, IMAGENET_TORCH
from ..registry import model_builder
from .checkpoint import SUFFIXES, Checkpoint, read_checkpoint, read_entry
from .download import cached_file
from .entry import WeightsEntry
from .hub import hub_name, hub_weights, timm_catalogue
from .keras_h5 import keras_layer_name
from .registry import WEIGHTS, get_weights

ALIASES = ("imagenet", "cifar10")


def resolve_weights(model: str | None, weights: str | os.PathLike) -> WeightsEntry | Path:
    """A registry entry for a name (``"imagenet"``, ``"resnet50.tv_in1k_v2"``), else a local file path."""
    if isinstance(weights, str) and (weights in WEIGHTS or weights in ALIASES):
        return get_weights(weights, model)
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise BadInput(f"weights {str(weights)!r}: not a regular file")
    if isinstance(weights, str) and os.sep not in weights and path.suffix.lower() not in SUFFIXES:
        close = difflib.get_close_matches(weights, [*ALIASES, *WEIGHTS], n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownName(f"unknown weights {weights!r}; {hint}use a registry name ('resnets weights list'), "
                         f"the alias 'imagenet' or 'cifar10', None/'none' for random weights, or a local file")
    raise FileNotFoundError(
        f"weights {str(weights)!r} are neither a registry name ('resnets weights list') nor an existing file"
    )


def default_weights(model: str) -> str:
    """What ``pretrained=True`` loads for ``model``, as timm loads a name's default tag: the registry's
    ``"imagenet"`` weights for it, else its ``"cifar10"`` ones, else the ImageNet-1k checkpoint of timm's
    catalogue with the best top-1 (an ``hf-hub:`` download)."""
    for alias in ALIASES:
        try:
            return get_weights(alias, model).name
        except ValueError:
            continue
    timm = [e for e in timm_catalogue().values() if e.model == model and e.num_classes == 1000]
    if not timm:
        raise BadInput(f"{model} has no published weights for pretrained=True to load: pass weights= a file "
                       "(a trained model, a timm or torchvision checkpoint) or pretrained=False")
    return max(timm, key=lambda e: e.metrics.get("top1", 0.0)).name


def weights_file(
    model: str | None, weights: str | os.PathLike, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> tuple[Path, WeightsEntry | None]:
    """The local file of ``weights`` and the entry that describes it, if known before reading it: a Hub repo's
    cached download, a registry entry's verified download, or a local file as it is (None: read its own)."""
    if (name := hub_name(weights)) is not None:
        return hub_weights(name, model, cache_dir)
    resolved = resolve_weights(model, weights)
    if isinstance(resolved, WeightsEntry):
        return cached_file(resolved, cache_dir, progress=progress), resolved
    return resolved, None


def weights_entry(model: str | None, weights: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> WeightsEntry | None:
    """What ``weights`` say of themselves (architecture, preprocessing, classes) without building a model: the
    registry's or the Hub's entry, else the file's own record; None for a file that records nothing.
    ``model`` picks the entry of an alias (``"imagenet"``); of a file only the header is read (a name is
    downloaded first)."""
    path, entry = weights_file(model, weights, cache_dir, progress)
    return entry or read_entry(path)


def entry_for_file(path: Path, model: str, ckpt: Checkpoint, model_kwargs: dict[str, Any]) -> WeightsEntry:
    """What a local file is: its recorded entry, else what its format and tensors suggest."""
    if ckpt.entry is not None:
        return dataclasses.replace(ckpt.entry, model_kwargs={**ckpt.entry.model_kwargs, **model_kwargs})
    num_classes = int(model_kwargs.get("num_classes", 0))
    cifar = "conv1.weight" in ckpt.state_dict and ckpt.state_dict["conv1.weight"].shape[-1] == 3
    if ckpt.file_format == "keras_h5":  # Keras' "caffe" mode for the V1 files, "tf" for V2
        preprocessing = IMAGENET_TF if model.endswith("v2") else IMAGENET_CAFFE
    else:
        preprocessing = CIFAR10 if cifar else IMAGENET_TORCH
    classes: str | tuple[str, ...] = tuple(str(i) for i in range(num_classes))
    if num_classes in (0, 10) and cifar:
        classes = "cifar10"
    elif num_classes in (0, 1000) and not cifar:
        classes = "imagenet"
    return WeightsEntry(
        name=path.name, model=model, url=None, sha256=None, file_format=ckpt.file_format,
        model_kwargs=model_kwargs, preprocessing=preprocessing, classes=classes,
        source=str(path), license="unknown (local file)",
    )


def check_fits(model: nn.Module, ckpt: Checkpoint, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``ValueError`` naming the first tensor where ``state_dict`` and ``model`` disagree.

    For Keras files the message also names the file's own layer.
    """
    def where(key: str) -> str:
        if ckpt.file_format != "keras_h5":
            return ""
        module = key.rsplit(".", 1)[0]
        return f" (Keras layer {keras_layer_name(module, ckpt.layer_names)!r})"

    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            if key.endswith("num_batches_tracked"):
                continue
            raise BadWeights(f"{what}: the model's {key} {tuple(tensor.shape)} is missing from the weights{where(key)}")
        if state_dict[key].shape != tensor.shape:
            raise BadWeights(
                f"{what}: {key} has shape {tuple(state_dict[key].shape)} in the weights "
                f"but {tuple(tensor.shape)} in the model{where(key)}"
            )
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise BadWeights(
            f"{what}: the weights' {extra[0]} {tuple(state_dict[extra[0]].shape)} has no place in the model"
            + where(extra[0])
            + (f" (and {len(extra) - 1} more unexpected tensors)" if len(extra) > 1 else "")
        )


def create_with_weights(
    model_name: str | None,
    weights: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build the model of ``weights`` (registry name, ``hf-hub:`` repo or local file) with them loaded strictly.

    ``model_name`` may be None when the weights say their architecture (a registry name, or a file
    that records it or whose tensors show it); a name that contradicts them is an error naming both.
    ``num_classes=0`` (Keras' ``include_top=False``) drops the file's classifier, and another class count
    than the file's replaces it with a fresh one, with a warning (timm's rule); other keyword arguments go to the
    model and override the variant the weights imply.  The returned model's ``pretrained_cfg`` is the
    :class:`WeightsEntry` describing the weights (without class names or metrics under a new head).
    """
    path, entry = weights_file(model_name, weights, cache_dir, progress)
    ckpt = read_checkpoint(path, fold_bias=not kwargs.get("conv_bias", False))
    recorded = entry.model if entry else ckpt.model
    if model_name is None:
        if recorded is None:
            raise BadInput(f"weights {path} do not say which network they belong to: give the model name "
                             "(create_model(NAME, weights=...), --model NAME)")
        model_name = recorded
    elif ckpt.entry is not None and ckpt.entry.model != model_name:
        raise BadWeights(f"weights {path} are a {ckpt.entry.model} (recorded in the file), not a {model_name}: "
                         f"drop the model name, or pass {ckpt.entry.model}")
    builder = model_builder(model_name)
    if recorded is not None and recorded != model_name and entry is None:
        described = f"{path} (a {recorded} checkpoint)"
    else:
        described = str(path)
    model_kwargs = {**ckpt.model_kwargs, **(entry.model_kwargs if entry else {}), **kwargs}
    try:
        model = builder(**model_kwargs)
    except (TypeError, ValueError) as e:
        raise BadWeights(f"weights {described}: cannot build {model_name} with the architecture they record "
                         f"({model_kwargs}): {e}") from None
    state_dict, new_head = _with_model_head(model, ckpt.state_dict, described)
    check_fits(model, ckpt, state_dict, f"weights {described} do not fit {model_name}")
    broken = next((k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:
        raise BadWeights(f"weights {described}: {broken} holds NaN or infinite values (saved from a diverged run?)")
    model.load_state_dict(state_dict, strict=True)
    cfg = entry or entry_for_file(Path(path), model_name, ckpt, model_kwargs)
    model.pretrained_cfg = cfg.with_new_head(model.num_classes) if new_head else cfg
    return model


def _with_model_head(model: nn.Module, state_dict: dict[str, torch.Tensor],
                     described: str) -> tuple[dict[str, torch.Tensor], bool]:
    """``state_dict`` with the model's own fresh classifier in place of the weights' where their class counts
    differ (timm's rule for ``num_classes=N``: a warning, then a new head to train), or without one for
    ``num_classes=0``; and whether the head was replaced."""
    if "fc.weight" not in state_dict or state_dict["fc.weight"].shape[0] == model.num_classes:
        return state_dict, False
    if model.num_classes:
        warnings.warn(f"weights {described} have {state_dict['fc.weight'].shape[0]} classes, the model "
                      f"num_classes={model.num_classes}: their classifier is dropped and a new one initialised",
                      stacklevel=4)
    body = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    return {**body, **{k: v for k, v in model.state_dict().items() if k.startswith("fc.")}}, True
