"""The small layers a block is assembled from: normalisation, convolution kinds, channel attention.

Each is one option of the design (``norm=``, ``conv=``, ``attn=`` of :class:`resnets.ResNet`), with
parameter names as timm writes them (``se.fc1``, ``se.conv``), so timm's state dicts load unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["batch", "group"]
ConvKind = Literal["plain", "std"]
Attention = Literal["se", "eca"]

NORMS: tuple[str, ...] = ("batch", "group")
CONVS: tuple[str, ...] = ("plain", "std")
ATTENTIONS: tuple[str, ...] = ("se", "eca")
GROUPNORM_GROUPS = 32


def norm_layer(kind: Norm, channels: int, eps: float = 1e-5) -> nn.Module:
    """BatchNorm (the paper's), or GroupNorm with 32 groups (Wu & He 2018; timm's ``_gn`` nets, BiT)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "group":
        if channels % GROUPNORM_GROUPS:
            raise ValueError(f"norm='group' needs channel counts divisible by {GROUPNORM_GROUPS}, got {channels}")
        return nn.GroupNorm(GROUPNORM_GROUPS, channels, eps=eps)
    raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}, got {kind!r}")


class StdConv2d(nn.Conv2d):
    """A convolution with weight standardisation (Qiao et al. 2019), as BiT (Kolesnikov et al. 2020) uses.

    Each output filter is shifted and scaled to zero mean and unit variance before the convolution;
    ``eps`` 1e-8 as in timm's BiT models.
    """

    def __init__(self, *args, eps: float = 1e-8, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        flat = self.weight.reshape(1, self.out_channels, -1)
        return F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


def conv2d(kind: ConvKind, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
           bias: bool = False) -> nn.Conv2d:
    """A ``kernel`` x ``kernel`` convolution with symmetric ``kernel // 2`` padding."""
    if kind not in CONVS:
        raise ValueError(f"conv must be one of {', '.join(map(repr, CONVS))}, got {kind!r}")
    cls = StdConv2d if kind == "std" else nn.Conv2d
    return cls(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=bias)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``divisor``), as timm sizes SE reductions."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018): channels reweighted by a gate on their means."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16) -> None:
        super().__init__()
        reduced = make_divisible(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


class EfficientChannelAttention(nn.Module):
    """ECA (Wang et al., CVPR 2020): SE without the bottleneck, a 1-D conv across the channel means.

    The kernel size grows with log2 of the channel count (the paper's gamma=2, beta=1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        t = int(abs(math.log(channels, 2) + 1) / 2)
        k = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        gate = self.conv(x.mean((2, 3)).view(n, 1, -1)).sigmoid().view(n, -1, 1, 1)
        return x * gate


def attention(kind: Attention | None, channels: int, rd_ratio: float = 1 / 16) -> nn.Module | None:
    """The channel attention a block applies before its add (None: none)."""
    if kind is None:
        return None
    if kind == "se":
        return SqueezeExcite(channels, rd_ratio)
    if kind == "eca":
        return EfficientChannelAttention(channels)
    raise ValueError(f"attn must be None or one of {', '.join(map(repr, ATTENTIONS))}, got {kind!r}")
