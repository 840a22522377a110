"""Fold eval-mode BatchNorm into the preceding convolution.

At inference a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one conv
with rescaled weights and a bias: one kernel and one pass over memory fewer per layer.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
        return False
    if conv.out_channels != bn.num_features:
        raise ValueError(
            f"cannot fold {bn_name} ({bn.num_features} features) into {conv_name} ({conv.out_channels} channels)"
        )
    setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
    setattr(parent, bn_name, nn.Identity())
    return True


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d; returns how many.

    The pairs are found structurally, as the models of this package are written: a child
    ``convK`` followed by its sibling ``bnK`` (stems and blocks), or a Conv2d followed by a
    BatchNorm2d inside an ``nn.Sequential`` (projection shortcuts).  The model must be in
    eval mode, where BatchNorm uses its running statistics.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (call model.eval() first)")
    folded = 0
    for parent in model.modules():
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            folded += sum(_fold_pair(parent, a, b) for a, b in zip(names, names[1:]))
        for name in children:
            if name.startswith("conv") and "bn" + name[4:] in children:
                folded += _fold_pair(parent, name, "bn" + name[4:])
    return folded
