"""Optimizers and their parameter groups, as torchvision's classification reference builds them.

``opt``: SGD (momentum, optionally Nesterov) and AdamW from torch, LAMB and LARS from ``timm.optim`` (the
optional ``resnets[train]`` extra). Parameter groups follow the reference's ``utils.set_weight_decay``:
normalisation layers' parameters take ``norm_weight_decay`` and parameters named ``bias`` take
``bias_weight_decay`` when given, everything else ``weight_decay``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..choices import OPTIMIZERS
from ..errors import MissingExtra, UnknownName
from ..layers import EvoNormS0

#: The reference's normalisation classes, and EvoNorm-S0 (this package's timm-style norm-activation layer).
NORM_CLASSES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
                nn.LocalResponseNorm, EvoNormS0)


def param_groups(model: nn.Module, weight_decay: float, norm_weight_decay: float | None = None,
                 bias_weight_decay: float | None = None) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` in weight-decay groups: ``bias`` (a parameter named so, when
    ``bias_weight_decay`` is given), ``norm`` (of a normalisation layer, when ``norm_weight_decay`` is), ``other``."""
    groups: dict[str, list[nn.Parameter]] = {"other": [], "norm": [], "bias": []}
    decays = {"other": weight_decay, "norm": norm_weight_decay, "bias": bias_weight_decay}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if bias_weight_decay is not None and name == "bias":
                groups["bias"].append(p)
            elif norm_weight_decay is not None and isinstance(module, NORM_CLASSES):
                groups["norm"].append(p)
            else:
                groups["other"].append(p)
    return [{"params": params, "weight_decay": decays[key]} for key, params in groups.items() if params]


def make_optimizer(opt: str, groups: list[dict[str, Any]], lr: float, momentum: float = 0.9, nesterov: bool = False,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """One of :data:`OPTIMIZERS` over ``groups`` (their own ``weight_decay`` wins over ``weight_decay``)."""
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if opt in ("lamb", "lars"):
        try:
            from timm.optim import Lamb, Lars
        except ImportError:
            raise MissingExtra(f"opt={opt!r} is timm's optimizer: pip install \"resnets[train]\"") from None
        if opt == "lamb":
            return Lamb(groups, lr=lr, weight_decay=weight_decay)
        return Lars(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    raise UnknownName(f"opt must be one of {', '.join(OPTIMIZERS)}, got {opt!r}")
