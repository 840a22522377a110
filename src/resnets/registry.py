"""Model names to builders: ``list_models``, ``create_model`` and one function per network."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable

from .blocks import BasicBlock
from .networks import CIFAR_WIDTHS, IMAGENET_DEPTHS, ResNet, cifar_blocks

_MODELS: dict[str, Callable[..., ResNet]] = {}


def register_model(fn: Callable[..., ResNet]) -> Callable[..., ResNet]:
    """Add a builder to the registry under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern (``"resnet*"``)."""
    names = sorted(_MODELS, key=lambda n: (n.rstrip("0123456789"), int(n[len(n.rstrip("0123456789")) :] or 0)))
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_builder(name: str) -> Callable[..., ResNet]:
    try:
        return _MODELS[name]
    except KeyError:
        close = [n for n in _MODELS if n.startswith(name.rstrip("0123456789"))] or list_models()
        raise ValueError(f"unknown model {name!r}; available: {', '.join(close)}") from None


def create_model(
    name: str,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    **kwargs,
) -> ResNet:
    """Build a registered model by name, optionally with weights (a registry name or a local file).

    ``num_classes`` defaults to the model's own (1000 for ImageNet nets, 10 for CIFAR nets,
    or the class count of the weights).  Extra keyword arguments go to :class:`ResNet`.
    """
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if weights is None:
        return model_builder(name)(**kwargs)
    from .weights import create_with_weights

    return create_with_weights(name, weights, **kwargs)


def _imagenet(depth: int, residual: bool, **kwargs) -> ResNet:
    block, layers = IMAGENET_DEPTHS[depth]
    return ResNet(block, layers, stem="imagenet", residual=residual, **kwargs)


def _cifar(depth: int, residual: bool, **kwargs) -> ResNet:
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("shortcut", "A")
    return ResNet(BasicBlock, cifar_blocks(depth), CIFAR_WIDTHS, stem="cifar", residual=residual, **kwargs)


# ImageNet networks (Table 1).  Defaults: shortcut B, stride on the 3x3 ("v1.5").


@register_model
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2), 11.7 M parameters."""
    return _imagenet(18, True, **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3), 21.8 M parameters."""
    return _imagenet(34, True, **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), 25.6 M parameters."""
    return _imagenet(50, True, **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3), 44.5 M parameters."""
    return _imagenet(101, True, **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    """ResNet-152: bottleneck blocks (3, 8, 36, 3), 60.2 M parameters."""
    return _imagenet(152, True, **kwargs)


@register_model
def plain18(**kwargs) -> ResNet:
    """Plain-18: ResNet-18 without shortcuts (the paper's Figure 4 baseline)."""
    return _imagenet(18, False, **kwargs)


@register_model
def plain34(**kwargs) -> ResNet:
    """Plain-34: ResNet-34 without shortcuts (Figure 3, middle)."""
    return _imagenet(34, False, **kwargs)


@register_model
def plain50(**kwargs) -> ResNet:
    """Plain-50: ResNet-50 without shortcuts."""
    return _imagenet(50, False, **kwargs)


@register_model
def plain101(**kwargs) -> ResNet:
    """Plain-101: ResNet-101 without shortcuts."""
    return _imagenet(101, False, **kwargs)


@register_model
def plain152(**kwargs) -> ResNet:
    """Plain-152: ResNet-152 without shortcuts."""
    return _imagenet(152, False, **kwargs)


# CIFAR networks (section 4.2): 6n+2 layers, 16/32/64 channels, option A shortcuts.


@register_model
def resnet20(**kwargs) -> ResNet:
    """CIFAR ResNet-20 (n=3), 0.27 M parameters."""
    return _cifar(20, True, **kwargs)


@register_model
def resnet32(**kwargs) -> ResNet:
    """CIFAR ResNet-32 (n=5), 0.46 M parameters."""
    return _cifar(32, True, **kwargs)


@register_model
def resnet44(**kwargs) -> ResNet:
    """CIFAR ResNet-44 (n=7), 0.66 M parameters."""
    return _cifar(44, True, **kwargs)


@register_model
def resnet56(**kwargs) -> ResNet:
    """CIFAR ResNet-56 (n=9), 0.85 M parameters."""
    return _cifar(56, True, **kwargs)


@register_model
def resnet110(**kwargs) -> ResNet:
    """CIFAR ResNet-110 (n=18), 1.7 M parameters."""
    return _cifar(110, True, **kwargs)


@register_model
def resnet1202(**kwargs) -> ResNet:
    """CIFAR ResNet-1202 (n=200), 19.4 M parameters."""
    return _cifar(1202, True, **kwargs)


@register_model
def plain20(**kwargs) -> ResNet:
    """CIFAR plain-20: ResNet-20 without shortcuts."""
    return _cifar(20, False, **kwargs)


@register_model
def plain32(**kwargs) -> ResNet:
    """CIFAR plain-32: ResNet-32 without shortcuts."""
    return _cifar(32, False, **kwargs)


@register_model
def plain44(**kwargs) -> ResNet:
    """CIFAR plain-44: ResNet-44 without shortcuts."""
    return _cifar(44, False, **kwargs)


@register_model
def plain56(**kwargs) -> ResNet:
    """CIFAR plain-56: ResNet-56 without shortcuts (Figure 1's deeper, worse net)."""
    return _cifar(56, False, **kwargs)


@register_model
def plain110(**kwargs) -> ResNet:
    """CIFAR plain-110: ResNet-110 without shortcuts."""
    return _cifar(110, False, **kwargs)
