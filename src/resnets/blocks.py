"""Residual blocks and their shortcuts: the paper's two (basic, bottleneck) and their pre-activation forms.

Every variant of the family is an option of these four classes (:class:`BlockOptions`): ResNeXt's
groups and Wide ResNet's width (``groups``, ``base_width``), SE/ECA attention (``attn``), timm's
average-pool downsampling (``avg_down``) and anti-aliasing (``aa``), SENet's narrow first conv and 3x3
projections (``reduce_first``, ``down_kernel``), GroupNorm, EvoNorm and weight-standardised convs
(``norm``, ``conv``), stochastic depth and dropout; a bottleneck also takes explicit channels (timm's pruned
nets). Parameter names follow torchvision and timm (``conv1``, ``bn1``,
``downsample.0``; pre-activation blocks ``norm1``, ``conv1``, ``norm2``...), so their state dicts load
unchanged. Activations are functional so that ``torch.export`` and quantizers see one op per use.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from .errors import BadInput, UnknownName
from .layers import AntiAlias, Attention, ConvKind, Norm, activation, anti_alias, attention, conv2d, norm_layer

Shortcut = Literal["A", "B", "C", "P"]
SHORTCUTS: tuple[str, ...] = ("A", "B", "C", "P")


@dataclass(frozen=True)
class BlockOptions:
    """What one block is made of, beyond its channels and stride.

    ``shortcut``: A (zero-padding), B (projection where the shape changes), C (projection on every block),
    P (Keras' ResNetV2: projection where the channels change, 1x1 max-pool subsampling where only the
    resolution does). ``residual=False`` gives the plain block. ``stride_in_1x1``: stride on the first
    1x1 conv of a bottleneck (the paper, Caffe, Keras V1) instead of the 3x3 (torchvision's "v1.5").
    ``groups``/``base_width``: the bottleneck's 3x3 is ``groups`` convs of ``width * base_width / 64``
    channels each (ResNeXt; Wide ResNet doubles ``base_width``). ``attn``: None, ``"se"`` or ``"eca"``
    before the add (``attn_ratio``: SE's reduction). ``avg_down``: projections average-pool, then
    convolve at stride 1 (timm's "D"). ``aa``: a strided conv runs at stride 1 and an average pool
    (``"avg"``) or blur pool (``"blur"``) subsamples after its activation, as in the stem's pool (timm's
    ``resnetaa*``, ``resnetblur*``; post-activation blocks). ``reduce_first``: a block's first conv has
    1/``reduce_first`` of the inner channels, and ``down_kernel``: a strided projection's kernel (SENet-154:
    2 and 3). ``dropout``: between the convs (Wide ResNet).
    """

    shortcut: Shortcut = "B"
    residual: bool = True
    conv_bias: bool = False
    bn_eps: float = 1e-5
    stride_in_1x1: bool = False
    groups: int = 1
    base_width: int = 64
    norm: Norm = "batch"
    conv: ConvKind = "plain"
    attn: Attention | None = None
    attn_ratio: float = 1 / 16
    avg_down: bool = False
    aa: AntiAlias | None = None
    reduce_first: int = 1
    down_kernel: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.shortcut not in SHORTCUTS:
            raise UnknownName(f"shortcut must be one of {', '.join(map(repr, SHORTCUTS))}, got {self.shortcut!r}")
        if self.groups < 1 or self.base_width < 1:
            raise BadInput(f"groups and base_width must be positive, got {self.groups} and {self.base_width}")
        if not 0.0 <= self.dropout < 1.0:
            raise BadInput(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.reduce_first < 1 or self.down_kernel < 1 or self.down_kernel % 2 == 0:
            raise BadInput(f"reduce_first must be positive and down_kernel odd, got {self.reduce_first} and "
                             f"{self.down_kernel}")


OPTION_NAMES = frozenset(f.name for f in fields(BlockOptions))


class PadShortcut(nn.Module):
    """Option A: parameter-free shortcut, stride-``s`` subsampling plus zero channels.

    The new channels are split evenly before and after the input channels, as in the
    widely used CIFAR reference code whose published checkpoints we load.  With equal channel
    counts it is plain subsampling, Keras' 1x1 max-pool shortcut.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise BadInput(f"option A cannot reduce channels ({in_ch} -> {out_ch})")
        self.stride = stride
        self.pad_front = (out_ch - in_ch) // 2
        self.pad_back = out_ch - in_ch - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_front or self.pad_back:
            x = F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


def _projection(in_ch: int, out_ch: int, stride: int, bias: bool, bn_eps: float, norm: Norm, conv: ConvKind,
                avg_down: bool, preact: bool, down_kernel: int) -> nn.Module:
    """A projection: conv + norm (post-activation), the bare conv (pre-activation: the block's ``norm1``
    already normalised its input), or timm's average pool + stride-1 1x1 conv (+ norm). The conv is 1x1,
    or ``down_kernel`` wide where it strides (SENet-154's 3x3)."""
    if avg_down:
        pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity())
        layers = [pool, conv2d(conv, in_ch, out_ch, 1, bias=bias)]
    else:
        layers = [conv2d(conv, in_ch, out_ch, down_kernel if stride > 1 else 1, stride, bias=bias)]
    if preact:
        return layers[0] if len(layers) == 1 else nn.Sequential(*layers)
    return nn.Sequential(*layers, norm_layer(norm, out_ch, bn_eps))


def make_shortcut(
    in_ch: int,
    out_ch: int,
    stride: int,
    option: Shortcut = "B",
    bias: bool = False,
    bn_eps: float = 1e-5,
    *,
    norm: Norm = "batch",
    conv: ConvKind = "plain",
    avg_down: bool = False,
    preact: bool = False,
    down_kernel: int = 1,
) -> nn.Module | None:
    """The shortcut branch of a block; ``None`` means the identity (see :class:`BlockOptions` for A/B/C/P)."""
    same_shape = in_ch == out_ch and stride == 1
    if option == "A" or (option == "P" and in_ch == out_ch):
        return None if same_shape else PadShortcut(in_ch, out_ch, stride)
    if option in ("B", "P") and same_shape:
        return None
    if option not in SHORTCUTS:
        raise UnknownName(f"shortcut must be one of {', '.join(map(repr, SHORTCUTS))}, got {option!r}")
    return _projection(in_ch, out_ch, stride, bias, bn_eps, norm, conv, avg_down, preact, down_kernel)


class ResidualBlock(nn.Module):
    """What every block shares: the shortcut, attention and stochastic depth, and the add.

    ``bn_folds`` names the (conv, norm) pairs where the norm directly follows the conv, which
    :func:`resnets.inference.fold.fold_batchnorm` may fold; a pre-activation norm follows an add, never a conv.
    """

    expansion = 1
    preact = False
    bn_folds: tuple[tuple[str, str], ...] = ()

    def init_common(self, in_ch: int, out_ch: int, stride: int, o: BlockOptions, drop_path: float,
                    nominal_out: int | None = None) -> None:
        """The shortcut, attention (``nominal_out``: the unpruned width that sizes ECA) and regularisation."""
        self.residual = o.residual
        self.downsample = (make_shortcut(in_ch, out_ch, stride, o.shortcut, o.conv_bias, o.bn_eps, norm=o.norm,
                                         conv=o.conv, avg_down=o.avg_down, preact=self.preact,
                                         down_kernel=o.down_kernel)
                           if o.residual else None)
        self.se = attention(o.attn, out_ch, o.attn_ratio, nominal_out)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path else None
        self.dropout = o.dropout

    def add_shortcut(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Attention and stochastic depth on the residual branch, then the shortcut added (unless plain)."""
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return out

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, self.training) if self.dropout else x

    def subsample(self, x: torch.Tensor) -> torch.Tensor:
        """The anti-aliasing pool after a stride-1 conv (``aa``), where the block strides."""
        return x if self.aa is None else self.aa(x)


def _options(options: BlockOptions | None, kwargs: dict) -> BlockOptions:
    if options is not None and kwargs:
        raise TypeError("pass block options either as a BlockOptions or as keywords, not both")
    return options or BlockOptions(**kwargs)


def bottleneck_width(width: int, o: BlockOptions) -> int:
    """The 3x3's channels: ``groups`` groups of ``width * base_width / 64`` (torchvision's and timm's rounding)."""
    return int(width * o.base_width / 64) * o.groups


def _check_basic(o: BlockOptions, kind: str) -> None:
    if o.groups != 1 or o.base_width != 64:
        raise BadInput(f"{kind} blocks have no groups or base width (got groups={o.groups}, "
                         f"base_width={o.base_width}); use a bottleneck block, or wider stage widths")


def _strided_conv(o: BlockOptions, channels: int, stride: int) -> tuple[int, nn.Module | None]:
    """The stride of a post-activation block's strided conv and the anti-aliasing pool after it (``aa``: the conv
    runs at stride 1); EvoNorm, a norm with its own activation, is built for pre-activation blocks only."""
    if o.norm == "evonorm":
        raise BadInput("norm='evonorm' is built for pre-activation blocks (timm's resnetv2_50d_evos)")
    if o.aa is None or stride == 1:
        return stride, None
    return 1, anti_alias(o.aa, channels, stride)


def _check_preact(o: BlockOptions) -> None:
    if o.aa is not None or o.reduce_first != 1:
        raise BadInput("aa and reduce_first are built for post-activation blocks (timm's resnet.py nets)")


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets); ``residual=False`` gives the plain block."""

    expansion = 1
    bn_folds = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_ch: int, width: int, stride: int = 1, options: BlockOptions | None = None, *,
                 drop_path: float = 0.0, **kwargs) -> None:
        super().__init__()
        o = _options(options, kwargs)
        _check_basic(o, "basic")
        out_ch, first = width * self.expansion, width // o.reduce_first
        conv_stride, self.aa = _strided_conv(o, first, stride)
        self.conv1 = conv2d(o.conv, in_ch, first, 3, conv_stride, bias=o.conv_bias)
        self.bn1 = norm_layer(o.norm, first, o.bn_eps)
        self.conv2 = conv2d(o.conv, first, out_ch, 3, bias=o.conv_bias)
        self.bn2 = norm_layer(o.norm, out_ch, o.bn_eps)
        self.init_common(in_ch, out_ch, stride, o, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.subsample(self.drop(F.relu(self.bn1(self.conv1(x)))))
        out = self.bn2(self.conv2(out))
        return F.relu(self.add_shortcut(out, x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand (x4) (ResNet-50/101/152).

    ``stride_in_1x1=True`` puts the stride on the first 1x1 conv as in the paper, the
    original Caffe models and Keras ("v1"); the default puts it on the 3x3 ("v1.5",
    torchvision), which is slightly more accurate. ``channels``: the three convs' output channels, for
    pruned nets whose widths follow no rule (timm's ``ecaresnet50d_pruned``); by default they follow
    ``width``, ``base_width``, ``groups`` and ``reduce_first``.
    """

    expansion = 4
    bn_folds = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, in_ch: int, width: int, stride: int = 1, options: BlockOptions | None = None, *,
                 drop_path: float = 0.0, channels: tuple[int, int, int] | None = None, **kwargs) -> None:
        super().__init__()
        o = _options(options, kwargs)
        inner = bottleneck_width(width, o)
        first, inner, out_ch = channels or (inner // o.reduce_first, inner, width * self.expansion)
        conv_stride, self.aa = _strided_conv(o, inner, stride)
        s1, s3 = (conv_stride, 1) if o.stride_in_1x1 else (1, conv_stride)
        self.conv1 = conv2d(o.conv, in_ch, first, 1, s1, bias=o.conv_bias)
        self.bn1 = norm_layer(o.norm, first, o.bn_eps)
        self.conv2 = conv2d(o.conv, first, inner, 3, s3, groups=o.groups, bias=o.conv_bias)
        self.bn2 = norm_layer(o.norm, inner, o.bn_eps)
        self.conv3 = conv2d(o.conv, inner, out_ch, 1, bias=o.conv_bias)
        self.bn3 = norm_layer(o.norm, out_ch, o.bn_eps)
        self.init_common(in_ch, out_ch, stride, o, drop_path, nominal_out=width * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.subsample(self.drop(F.relu(self.bn2(self.conv2(out)))))
        out = self.bn3(self.conv3(out))
        return F.relu(self.add_shortcut(out, x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBlock(ResidualBlock):
    """What the pre-activation blocks share (He et al., "Identity Mappings in Deep Residual Networks", 2016):
    norm + ReLU come before each conv, nothing after the add; a projection shortcut reads the
    normalised input, an identity or subsampling shortcut the raw one. ``act``: ReLU, or nothing after
    EvoNorm (:func:`resnets.layers.activation`)."""

    preact = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.norm1(x))
        projects = self.downsample is not None and not isinstance(self.downsample, PadShortcut)
        return self.add_shortcut(self.branch(pre), pre if projects else x)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.last_conv().weight)


class PreActBasicBlock(PreActBlock):
    """norm-ReLU-3x3, norm-ReLU-(dropout)-3x3: the CIFAR ResNet-110 v2 and Wide ResNet block."""

    expansion = 1
    bn_folds = (("conv1", "norm2"),)

    def __init__(self, in_ch: int, width: int, stride: int = 1, options: BlockOptions | None = None, *,
                 drop_path: float = 0.0, **kwargs) -> None:
        super().__init__()
        o = _options(options, kwargs)
        _check_basic(o, "pre-activation basic")
        _check_preact(o)
        self.act = activation(o.norm)
        out_ch = width * self.expansion
        self.norm1 = norm_layer(o.norm, in_ch, o.bn_eps)
        self.conv1 = conv2d(o.conv, in_ch, width, 3, stride)
        self.norm2 = norm_layer(o.norm, width, o.bn_eps)
        self.conv2 = conv2d(o.conv, width, out_ch, 3, bias=o.conv_bias)
        self.init_common(in_ch, out_ch, stride, o, drop_path)

    def branch(self, pre: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.drop(self.act(self.norm2(self.conv1(pre)))))

    def last_conv(self) -> nn.Conv2d:
        return self.conv2


class PreActBottleneck(PreActBlock):
    """norm-ReLU-1x1, norm-ReLU-3x3, norm-ReLU-1x1 (x4): Keras' ResNet50V2, timm's ResNetV2 and BiT.

    Only the last conv (and a projection) may have a bias (``conv_bias``, as Keras builds them); the
    first two feed a norm, which makes a bias redundant.
    """

    expansion = 4
    bn_folds = (("conv1", "norm2"), ("conv2", "norm3"))

    def __init__(self, in_ch: int, width: int, stride: int = 1, options: BlockOptions | None = None, *,
                 drop_path: float = 0.0, **kwargs) -> None:
        super().__init__()
        o = _options(options, kwargs)
        _check_preact(o)
        self.act = activation(o.norm)
        out_ch = width * self.expansion
        inner = bottleneck_width(width, o)
        s1, s3 = (stride, 1) if o.stride_in_1x1 else (1, stride)
        self.norm1 = norm_layer(o.norm, in_ch, o.bn_eps)
        self.conv1 = conv2d(o.conv, in_ch, inner, 1, s1)
        self.norm2 = norm_layer(o.norm, inner, o.bn_eps)
        self.conv2 = conv2d(o.conv, inner, inner, 3, s3, groups=o.groups)
        self.norm3 = norm_layer(o.norm, inner, o.bn_eps)
        self.conv3 = conv2d(o.conv, inner, out_ch, 1, bias=o.conv_bias)
        self.init_common(in_ch, out_ch, stride, o, drop_path)

    def branch(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm2(self.conv1(pre)))
        out = self.drop(self.act(self.norm3(self.conv2(out))))
        return self.conv3(out)

    def last_conv(self) -> nn.Conv2d:
        return self.conv3


Block = type[BasicBlock] | type[Bottleneck] | type[PreActBasicBlock] | type[PreActBottleneck]
BLOCKS: dict[str, Block] = {"basic": BasicBlock, "bottleneck": Bottleneck,
                            "preact_basic": PreActBasicBlock, "preact_bottleneck": PreActBottleneck}


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
        raise BadInput("a convolutional block has a projection shortcut; use shortcut='B' or 'C'")
    out = block(in_ch, width, stride, **kwargs)
    if out.downsample is None:
        raise BadInput(
            f"in_ch={in_ch}, width={width}, stride={stride} keeps the shape; use identity_block instead"
        )
    return out
