"""Model names to architecture builders: the bottom of the model layers (no weights here).

``register_model`` adds a builder ``(**kwargs) -> nn.Module``; :mod:`resnets.factory` puts weights
on top (``create_model``, ``resnets.resnet50(weights=...)``) and :mod:`resnets.weights` reads this
registry, never the other way round.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from functools import partial

from torch import nn

from .blocks import BasicBlock
from .networks import CIFAR_WIDTHS, IMAGENET_DEPTHS, ResNet, cifar_blocks

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
    """Add an architecture builder under ``name`` (default: its function name); a taken name is an error."""
    name = name or fn.__name__
    if name in _MODELS:
        raise ValueError(f"a model called {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def _sort_key(name: str) -> tuple[str, int]:
    stem = name.rstrip("0123456789")
    return stem, int(name[len(stem):] or 0)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern (``"resnet*"``)."""
    return [n for n in sorted(_MODELS, key=_sort_key) if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The architecture builder of ``name`` (random weights); unknown names suggest the closest."""
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}see resnets.list_models() or 'resnets list'") from None


def _imagenet(depth: int, residual: bool, **kwargs) -> ResNet:
    block, layers = IMAGENET_DEPTHS[depth]
    return ResNet(block, layers, stem="imagenet", residual=residual, **kwargs)


def _cifar(depth: int, residual: bool, **kwargs) -> ResNet:
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("shortcut", "A")
    return ResNet(BasicBlock, cifar_blocks(depth), CIFAR_WIDTHS, stem="cifar", residual=residual, **kwargs)


#: The paper's networks: ImageNet (Table 1; defaults shortcut B, stride on the 3x3, "v1.5") and CIFAR
#: (section 4.2: 6n+2 layers, 16/32/64 channels, option A shortcuts), each with its plain twin.
ARCHITECTURES: dict[str, tuple[Callable[..., ResNet], int, bool, str]] = {
    "resnet18": (_imagenet, 18, True, "ResNet-18: basic blocks (2, 2, 2, 2), 11.7 M parameters."),
    "resnet34": (_imagenet, 34, True, "ResNet-34: basic blocks (3, 4, 6, 3), 21.8 M parameters."),
    "resnet50": (_imagenet, 50, True, "ResNet-50: bottleneck blocks (3, 4, 6, 3), 25.6 M parameters."),
    "resnet101": (_imagenet, 101, True, "ResNet-101: bottleneck blocks (3, 4, 23, 3), 44.5 M parameters."),
    "resnet152": (_imagenet, 152, True, "ResNet-152: bottleneck blocks (3, 8, 36, 3), 60.2 M parameters."),
    "plain18": (_imagenet, 18, False, "Plain-18: ResNet-18 without shortcuts (the paper's Figure 4 baseline)."),
    "plain34": (_imagenet, 34, False, "Plain-34: ResNet-34 without shortcuts (Figure 3, middle)."),
    "plain50": (_imagenet, 50, False, "Plain-50: ResNet-50 without shortcuts."),
    "plain101": (_imagenet, 101, False, "Plain-101: ResNet-101 without shortcuts."),
    "plain152": (_imagenet, 152, False, "Plain-152: ResNet-152 without shortcuts."),
    "resnet20": (_cifar, 20, True, "CIFAR ResNet-20 (n=3), 0.27 M parameters."),
    "resnet32": (_cifar, 32, True, "CIFAR ResNet-32 (n=5), 0.46 M parameters."),
    "resnet44": (_cifar, 44, True, "CIFAR ResNet-44 (n=7), 0.66 M parameters."),
    "resnet56": (_cifar, 56, True, "CIFAR ResNet-56 (n=9), 0.85 M parameters."),
    "resnet110": (_cifar, 110, True, "CIFAR ResNet-110 (n=18), 1.7 M parameters."),
    "resnet1202": (_cifar, 1202, True, "CIFAR ResNet-1202 (n=200), 19.4 M parameters."),
    "plain20": (_cifar, 20, False, "CIFAR plain-20: ResNet-20 without shortcuts."),
    "plain32": (_cifar, 32, False, "CIFAR plain-32: ResNet-32 without shortcuts."),
    "plain44": (_cifar, 44, False, "CIFAR plain-44: ResNet-44 without shortcuts."),
    "plain56": (_cifar, 56, False, "CIFAR plain-56: ResNet-56 without shortcuts (Figure 1's deeper, worse net)."),
    "plain110": (_cifar, 110, False, "CIFAR plain-110: ResNet-110 without shortcuts."),
}

for _name, (_family, _depth, _residual, _doc) in ARCHITECTURES.items():
    _builder = partial(_family, _depth, _residual)
    _builder.__doc__ = _doc  # type: ignore[attr-defined]
    register_model(_builder, _name)
