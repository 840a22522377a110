"""The small layers a block is assembled from: normalisation, convolution kinds, channel attention, anti-aliasing.

Each is one option of the design (``norm=``, ``conv=``, ``attn=``, ``aa=`` of :class:`resnets.ResNet`), with
parameter names as timm writes them (``se.fc1``, ``se.conv``, EvoNorm's ``v``), so timm's state dicts load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .errors import BadInput, UnknownName

Norm = Literal["batch", "group", "evonorm"]
ConvKind = Literal["plain", "std"]
Attention = Literal["se", "eca"]
AntiAlias = Literal["avg", "blur"]

NORMS: tuple[str, ...] = ("batch", "group", "evonorm")
CONVS: tuple[str, ...] = ("plain", "std")
ATTENTIONS: tuple[str, ...] = ("se", "eca")
ANTI_ALIASES: tuple[str, ...] = ("avg", "blur")
GROUPNORM_GROUPS = 32


class EvoNormS0(nn.Module):
    """EvoNorm-S0 (Liu et al. 2020), normalisation and activation in one layer, as timm's ``EvoNorm2dS0``:
    ``x * sigmoid(v * x)`` over the standard deviation of x's group (32 groups), then a per-channel affine.

    Its gate is the nonlinearity, so no ReLU follows it (:func:`activation`); it has no running statistics,
    so BN folding leaves it alone.
    """

    def __init__(self, channels: int, eps: float = 1e-5, groups: int = GROUPNORM_GROUPS) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.v = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        grouped = x.reshape(n, self.groups, -1)
        std = grouped.float().var(dim=2, unbiased=False, keepdim=True).add(self.eps).sqrt().to(x.dtype)
        gated = x * (x * self.v.view(1, -1, 1, 1)).sigmoid()
        out = (gated.reshape(n, self.groups, -1) / std).reshape_as(x)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def norm_layer(kind: Norm, channels: int, eps: float = 1e-5) -> nn.Module:
    """BatchNorm (the paper's), GroupNorm with 32 groups (Wu & He 2018; timm's ``_gn`` nets, BiT), or
    EvoNorm-S0 over 32 groups (timm's ``_evos`` nets)."""
    if kind not in NORMS:
        raise UnknownName(f"norm must be one of {', '.join(map(repr, NORMS))}, got {kind!r}")
    if kind == "batch":
        return nn.BatchNorm2d(channels, eps=eps)
    if channels % GROUPNORM_GROUPS:
        raise BadInput(f"norm={kind!r} needs channel counts divisible by {GROUPNORM_GROUPS}, got {channels}")
    if kind == "group":
        return nn.GroupNorm(GROUPNORM_GROUPS, channels, eps=eps)
    return EvoNormS0(channels, eps)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def activation(kind: Norm) -> Callable[[torch.Tensor], torch.Tensor]:
    """The nonlinearity after a norm of this kind: ReLU, or none after EvoNorm-S0, which gates itself."""
    return _identity if kind == "evonorm" else F.relu


def activation_layer(kind: Norm) -> nn.Module:
    """:func:`activation` as a module, for the stem's ``nn.Sequential`` (parameter-free: the keys stay timm's)."""
    return nn.Identity() if kind == "evonorm" else nn.ReLU()


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
        raise UnknownName(f"conv must be one of {', '.join(map(repr, CONVS))}, got {kind!r}")
    cls = StdConv2d if kind == "std" else nn.Conv2d
    return cls(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=bias)


class BlurPool2d(nn.Module):
    """Blur, then subsample (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): a fixed 3x3
    binomial filter per channel after reflect padding, as timm's ``BlurPool2d`` (its filter is not saved)."""

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride
        taps = torch.tensor([1.0, 2.0, 1.0]) / 4
        self.register_buffer("filt", (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3).clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=self.stride, groups=self.channels)


def anti_alias(kind: AntiAlias, channels: int, stride: int = 2) -> nn.Module:
    """The low-pass subsampling that replaces a strided conv (timm's ``aa_layer``): a ``stride`` x ``stride``
    average pool (timm's ``resnetaa*``) or a blur pool (``resnetblur*``)."""
    if kind == "avg":
        return nn.AvgPool2d(stride)
    if kind == "blur":
        return BlurPool2d(channels, stride)
    raise UnknownName(f"aa must be None or one of {', '.join(map(repr, ANTI_ALIASES))}, got {kind!r}")


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

    The kernel size grows with log2 of the channel count (the paper's gamma=2, beta=1); a pruned net keeps
    the kernel of its unpruned channel count, as timm's ``*_pruned`` nets do.
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


def attention(kind: Attention | None, channels: int, rd_ratio: float = 1 / 16,
              nominal_channels: int | None = None) -> nn.Module | None:
    """The channel attention a block applies before its add (None: none); ``nominal_channels``: the unpruned
    count that sizes ECA's kernel (default ``channels``)."""
    if kind is None:
        return None
    if kind == "se":
        return SqueezeExcite(channels, rd_ratio)
    if kind == "eca":
        return EfficientChannelAttention(nominal_channels or channels)
    raise UnknownName(f"attn must be None or one of {', '.join(map(repr, ATTENTIONS))}, got {kind!r}")
