"""Fold what is constant at inference into the convolutions: eval-mode BatchNorm, weight standardisation.

At inference a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one conv
with rescaled weights and a bias: one kernel and one pass over memory fewer per layer.  A
weight-standardised conv (BiT) renormalises fixed weights on every call; once is enough.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import BadInput
from ..layers import StdConv2d


def _fold_into(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """``conv`` (a plain Conv2d, or a Sequential ending in one: a deep stem) with ``bn`` folded in."""
    if isinstance(conv, nn.Sequential):
        last = str(len(conv) - 1)
        conv._modules[last] = _fold_into(conv._modules[last], bn)
        return conv
    return fuse_conv_bn_eval(conv, bn)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """A plain conv (weight-standardised convs are not: their weight is renormalised on every call)."""
    while isinstance(conv, nn.Sequential) and len(conv):
        conv = conv[-1]
    return type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    if not _foldable(conv, bn):
        return False
    last = conv[-1] if isinstance(conv, nn.Sequential) else conv
    if last.out_channels != bn.num_features:
        raise BadInput(
            f"cannot fold {bn_name} ({bn.num_features} features) into {conv_name} ({last.out_channels} channels)"
        )
    setattr(parent, conv_name, _fold_into(conv, bn))
    setattr(parent, bn_name, nn.Identity())
    return True


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d; returns how many.

    The pairs are the ones each module declares in ``bn_folds`` (a block's ``(conv2, bn2)``; a
    pre-activation block's ``(conv1, norm2)``, never its ``norm1``, which follows an add), and
    a Conv2d followed by a BatchNorm2d inside an ``nn.Sequential`` (projection shortcuts, deep
    stems).  The model must be in eval mode, where BatchNorm uses its running statistics.
    """
    if model.training:
        raise BadInput("fold_batchnorm needs an eval-mode model (call model.eval() first)")
    folded = 0
    for parent in list(model.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            folded += sum(_fold_pair(parent, a, b) for a, b in zip(names, names[1:]))
        for conv_name, bn_name in getattr(parent, "bn_folds", ()):
            folded += _fold_pair(parent, conv_name, bn_name)
    return folded


def freeze_standardized_convs(model: nn.Module) -> int:
    """Replace, in place, every weight-standardised conv by a plain conv holding its standardised weight."""
    frozen = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, StdConv2d):
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                 child.padding, child.dilation, child.groups, child.bias is not None,
                                 device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    conv.weight.copy_(child.standardized_weight())
                    if child.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(parent, name, conv)
                frozen += 1
    return frozen
