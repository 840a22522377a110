"""The two residual blocks of the paper and their shortcuts.

Parameter names follow torchvision (``conv1``, ``bn1``, ..., ``downsample.0``/``downsample.1``)
so that torchvision state dicts load unchanged.  Activations are functional (no shared
``nn.ReLU`` module) so that ``torch.export`` and quantizers see one op per use.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Shortcut = Literal["A", "B", "C"]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=bias)


class PadShortcut(nn.Module):
    """Option A: parameter-free shortcut, stride-``s`` subsampling plus zero channels.

    The new channels are split evenly before and after the input channels, as in the
    widely used CIFAR reference code whose published checkpoints we load.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A cannot reduce channels ({in_ch} -> {out_ch})")
        self.stride = stride
        self.pad_front = (out_ch - in_ch) // 2
        self.pad_back = out_ch - in_ch - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


def make_shortcut(
    in_ch: int,
    out_ch: int,
    stride: int,
    option: Shortcut = "B",
    bias: bool = False,
    bn_eps: float = 1e-5,
) -> nn.Module | None:
    """The shortcut branch of a block; ``None`` means the identity.

    A: identity, or zero-padding where shapes change.  B: identity, or a strided 1x1
    projection + BN where shapes change.  C: projection on every block.
    """
    same_shape = in_ch == out_ch and stride == 1
    if option == "A":
        return None if same_shape else PadShortcut(in_ch, out_ch, stride)
    if option == "B" and same_shape:
        return None
    if option not in ("B", "C"):
        raise ValueError(f"shortcut must be 'A', 'B' or 'C', got {option!r}")
    return nn.Sequential(conv1x1(in_ch, out_ch, stride, bias), nn.BatchNorm2d(out_ch, eps=bn_eps))


class ResidualBlock(nn.Module):
    """What both blocks share: the shortcut branch and the final add + ReLU."""

    expansion = 1

    def init_shortcut(self, in_ch: int, out_ch: int, stride: int, shortcut: Shortcut, residual: bool,
                      conv_bias: bool, bn_eps: float) -> None:
        self.residual = residual
        self.downsample = make_shortcut(in_ch, out_ch, stride, shortcut, conv_bias, bn_eps) if residual else None

    def merge(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Add the shortcut (unless plain) and apply the block's final ReLU."""
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets); ``residual=False`` gives the plain block."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        width: int,
        stride: int = 1,
        *,
        shortcut: Shortcut = "B",
        residual: bool = True,
        conv_bias: bool = False,
        bn_eps: float = 1e-5,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        del stride_in_1x1  # only meaningful for the bottleneck
        out_ch = width * self.expansion
        self.conv1 = conv3x3(in_ch, width, stride, conv_bias)
        self.bn1 = nn.BatchNorm2d(width, eps=bn_eps)
        self.conv2 = conv3x3(width, out_ch, 1, conv_bias)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.init_shortcut(in_ch, out_ch, stride, shortcut, residual, conv_bias, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.merge(out, x)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (x4) (ResNet-50/101/152).

    ``stride_in_1x1=True`` puts the stride on the first 1x1 conv as in the paper, the
    original Caffe models and Keras ("v1"); the default puts it on the 3x3 ("v1.5",
    torchvision), which is slightly more accurate.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        width: int,
        stride: int = 1,
        *,
        shortcut: Shortcut = "B",
        residual: bool = True,
        conv_bias: bool = False,
        bn_eps: float = 1e-5,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        out_ch = width * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_ch, width, s1, conv_bias)
        self.bn1 = nn.BatchNorm2d(width, eps=bn_eps)
        self.conv2 = conv3x3(width, width, s3, conv_bias)
        self.bn2 = nn.BatchNorm2d(width, eps=bn_eps)
        self.conv3 = conv1x1(width, out_ch, 1, conv_bias)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.init_shortcut(in_ch, out_ch, stride, shortcut, residual, conv_bias, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.merge(out, x)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


Block = type[BasicBlock] | type[Bottleneck]


def identity_block(block: Block, channels: int, **kwargs) -> nn.Module:
    """The Keras tutorial's identity block: input and output shapes equal, shortcut ``x``.

    ``channels`` is the block's input (= output) channel count.
    """
    return block(channels, channels // block.expansion, 1, **kwargs)


def convolutional_block(block: Block, in_ch: int, width: int, stride: int = 2, **kwargs) -> nn.Module:
    """The Keras tutorial's convolutional block: shapes change, shortcut is a strided 1x1 projection.

    ``width`` is the inner width; the output has ``width * block.expansion`` channels.
    """
    kwargs.setdefault("shortcut", "B")
    if kwargs["shortcut"] == "A":
        raise ValueError("a convolutional block has a projection shortcut; use shortcut='B' or 'C'")
    out = block(in_ch, width, stride, **kwargs)
    if out.downsample is None:
        raise ValueError(
            f"in_ch={in_ch}, width={width}, stride={stride} keeps the shape; use identity_block instead"
        )
    return out
