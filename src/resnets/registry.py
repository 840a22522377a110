"""Model names to architecture builders: the bottom of the model layers (no weights here).

``register_model`` adds a builder ``(**kwargs) -> nn.Module``; :mod:`resnets.factory` puts weights
on top (``create_model``, ``resnets.resnet50(weights=...)``) and :mod:`resnets.weights` reads this
registry, never the other way round.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable

from torch import nn

from .errors import BadInput, UnknownName

from .networks import CIFAR_WIDTHS, IMAGENET_WIDTHS, ResNet, cifar_blocks

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
    """Add an architecture builder under ``name`` (default: its function name); a taken name is an error."""
    name = name or fn.__name__
    if name in _MODELS:
        raise BadInput(f"a model called {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def _sort_key(name: str) -> tuple:
    """Natural order: resnet18 < resnet50 < resnet101, resnetv2_50x1 < resnetv2_101x1."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


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
        raise UnknownName(f"unknown model {name!r}; {hint}see resnets.list_models() or 'resnets list'") from None


def _table(doc: str, **kwargs) -> tuple[str, dict]:
    return doc, kwargs


# Shorthands for the table below: each is keyword arguments of ResNet.
_R18, _R34 = dict(block="basic", layers=(2, 2, 2, 2)), dict(block="basic", layers=(3, 4, 6, 3))
_R26, _R50 = dict(block="bottleneck", layers=(2, 2, 2, 2)), dict(block="bottleneck", layers=(3, 4, 6, 3))
_R101, _R152 = dict(block="bottleneck", layers=(3, 4, 23, 3)), dict(block="bottleneck", layers=(3, 8, 36, 3))
_R200 = dict(block="bottleneck", layers=(3, 24, 36, 3))
_R269 = dict(block="bottleneck", layers=(3, 30, 48, 8))
_C, _S = dict(stem="deep"), dict(stem="deep", stem_width=64)  # timm's deep stems (Bag of Tricks' ResNet-C)
_D, _T = dict(stem="deep", avg_down=True), dict(stem="deep_tiered", avg_down=True)  # + average-pool downsampling
_SE, _ECA = dict(attn="se"), dict(attn="eca")
_RS = dict(stem="deep", stem_pool="conv", avg_down=True, attn="se", attn_ratio=0.25)  # ResNet-RS (Bello et al. 2021)
_AA, _BLUR = dict(aa="avg"), dict(aa="blur")  # anti-aliased downsampling (Zhang 2019): average or blur pool
_SENET = dict(groups=64, base_width=4, stem="deep", stem_width=64, reduce_first=2, down_kernel=3, attn="se")
_KERAS_V2 = dict(block="preact_bottleneck", stem_pool="max_zero_pad", down_last=True, shortcut="P", conv_bias=True,
                 bn_eps=1.001e-5)
_TIMM_V2 = dict(block="preact_bottleneck")
_V2D = dict(stem="deep", avg_down=True)  # timm's ResNetV2 "d": deep stem (32, 32, 64), average-pool projections
_BIT = dict(block="preact_bottleneck", stem_pool="max_zero_pad", norm="group", conv="std")
_CIFAR = dict(stem="cifar", widths=CIFAR_WIDTHS, num_classes=10)


def _cifar(depth: int, residual: bool = True) -> dict:
    """Section 4.2: 6n+2 layers of basic blocks, 16/32/64 channels, option A shortcuts."""
    return dict(_CIFAR, block="basic", layers=cifar_blocks(depth), shortcut="A", residual=residual)


def _cifar_v2(depth: int) -> dict:
    """The Identity Mappings paper's CIFAR nets: pre-activation basic (6n+2) or bottleneck (9n+2) blocks."""
    block = "preact_basic" if depth == 110 else "preact_bottleneck"
    return dict(_CIFAR, block=block, layers=cifar_blocks(depth, 2 if depth == 110 else 3))


def _wide_cifar(depth: int, k: int) -> dict:
    """Wide ResNet-depth-k (Zagoruyko & Komodakis 2016): (depth - 4) / 6 pre-activation basic blocks per stage,
    16k/32k/64k channels after a 16-channel stem; ``dropout=`` between the convs."""
    if (depth - 4) % 6:
        raise BadInput(f"a Wide ResNet has depth 6n+4, got {depth}")
    n = (depth - 4) // 6
    return dict(_CIFAR, block="preact_basic", layers=(n, n, n), widths=(16 * k, 32 * k, 64 * k), stem_width=16)


def _pruned(stages: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]) -> dict:
    """timm's pruned nets (Aflalo et al. 2020, "Knapsack Pruning with Inner Distillation"; the channel counts of
    timm/models/_pruned/*.txt): per stage its output width and each block's first 1x1 and 3x3 widths."""
    return dict(block_channels=tuple(tuple((first, inner, out) for first, inner in blocks) for out, blocks in stages))


_ECA50D_PRUNED = _pruned((
    (19, ((47, 18), (52, 22), (64, 35))),
    (171, ((85, 37), (107, 80), (120, 85), (125, 87))),
    (818, ((198, 126), (255, 232), (256, 233), (253, 235), (256, 225), (256, 239))),
    (2022, ((492, 237), (512, 500), (512, 490))),
))
_ECA101D_PRUNED = _pruned((
    (26, ((45, 25), (53, 20), (60, 27))),
    (142, ((81, 24), (93, 49), (102, 54), (122, 78))),
    (278, ((101, 25), (239, 160), (234, 156), (250, 176), (253, 191), (251, 175), (230, 128), (244, 154), (244, 159),
           (238, 97), (244, 149), (253, 181), (245, 119), (255, 216), (256, 201), (253, 149), (254, 141), (256, 190),
           (256, 217), (255, 156), (256, 155), (256, 232), (256, 214))),
    (2042, ((499, 289), (512, 512), (512, 502))),
))


def _bit(layers: tuple[int, ...], k: int) -> dict:
    return dict(_BIT, layers=layers, widths=tuple(w * k for w in IMAGENET_WIDTHS))


#: Every registered network: a one-line description and the ResNet keyword arguments that make it.
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    # The paper (He et al. 2015): Table 1 (shortcut B, stride on the 3x3, "v1.5") and their plain twins.
    "resnet18": _table("ResNet-18: basic blocks (2, 2, 2, 2).", **_R18),
    "resnet34": _table("ResNet-34: basic blocks (3, 4, 6, 3).", **_R34),
    "resnet50": _table("ResNet-50: bottleneck blocks (3, 4, 6, 3).", **_R50),
    "resnet101": _table("ResNet-101: bottleneck blocks (3, 4, 23, 3).", **_R101),
    "resnet152": _table("ResNet-152: bottleneck blocks (3, 8, 36, 3).", **_R152),
    "plain18": _table("Plain-18: ResNet-18 without shortcuts (the paper's Figure 4 baseline).", **_R18, residual=False),
    "plain34": _table("Plain-34: ResNet-34 without shortcuts (Figure 3, middle).", **_R34, residual=False),
    "plain50": _table("Plain-50: ResNet-50 without shortcuts.", **_R50, residual=False),
    "plain101": _table("Plain-101: ResNet-101 without shortcuts.", **_R101, residual=False),
    "plain152": _table("Plain-152: ResNet-152 without shortcuts.", **_R152, residual=False),
    # The paper's CIFAR nets (section 4.2).
    "resnet20": _table("CIFAR ResNet-20 (n=3).", **_cifar(20)),
    "resnet32": _table("CIFAR ResNet-32 (n=5).", **_cifar(32)),
    "resnet44": _table("CIFAR ResNet-44 (n=7).", **_cifar(44)),
    "resnet56": _table("CIFAR ResNet-56 (n=9).", **_cifar(56)),
    "resnet110": _table("CIFAR ResNet-110 (n=18).", **_cifar(110)),
    "resnet1202": _table("CIFAR ResNet-1202 (n=200).", **_cifar(1202)),
    "plain20": _table("CIFAR plain-20: ResNet-20 without shortcuts.", **_cifar(20, False)),
    "plain32": _table("CIFAR plain-32: ResNet-32 without shortcuts.", **_cifar(32, False)),
    "plain44": _table("CIFAR plain-44: ResNet-44 without shortcuts.", **_cifar(44, False)),
    "plain56": _table("CIFAR plain-56: ResNet-56 without shortcuts (Figure 1's deeper, worse net).", **_cifar(56, False)),
    "plain110": _table("CIFAR plain-110: ResNet-110 without shortcuts.", **_cifar(110, False)),
    # ResNeXt (Xie et al. 2017) and Wide ResNet (Zagoruyko & Komodakis 2016) as torchvision builds them.
    "resnext50_32x4d": _table("ResNeXt-50 32x4d: 32 groups of 4 channels in the first stage's 3x3.", **_R50,
                              groups=32, base_width=4),
    "resnext101_32x8d": _table("ResNeXt-101 32x8d.", **_R101, groups=32, base_width=8),
    "resnext101_64x4d": _table("ResNeXt-101 64x4d.", **_R101, groups=64, base_width=4),
    "wide_resnet50_2": _table("Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide.", **_R50, base_width=128),
    "wide_resnet101_2": _table("Wide ResNet-101-2.", **_R101, base_width=128),
    # Pre-activation ResNets (He et al., "Identity Mappings in Deep Residual Networks", 2016).
    "resnet50v2": _table("ResNet50V2 as Keras builds it: pre-activation bottlenecks, stride on each stage's last "
                         "block, 1x1 max-pool shortcuts, final norm.", **_KERAS_V2, layers=(3, 4, 6, 3)),
    "resnet101v2": _table("ResNet101V2 as Keras builds it.", **_KERAS_V2, layers=(3, 4, 23, 3)),
    "resnet152v2": _table("ResNet152V2 as Keras builds it.", **_KERAS_V2, layers=(3, 8, 36, 3)),
    "resnet110v2": _table("CIFAR pre-activation ResNet-110 (basic blocks).", **_cifar_v2(110)),
    "resnet164v2": _table("CIFAR pre-activation ResNet-164 (bottleneck blocks).", **_cifar_v2(164)),
    "resnet1001v2": _table("CIFAR pre-activation ResNet-1001 (bottleneck blocks).", **_cifar_v2(1001)),
    "wide_resnet28_10": _table("CIFAR Wide ResNet-28-10.", **_wide_cifar(28, 10)),
    "wide_resnet16_8": _table("CIFAR Wide ResNet-16-8.", **_wide_cifar(16, 8)),
    # timm's ResNet variants with published weights (timm/models/resnet.py), under timm's names.
    "resnet10t": _table("timm ResNet-10-T: tiered deep stem, average-pool downsampling.", block="basic",
                        layers=(1, 1, 1, 1), **_T),
    "resnet14t": _table("timm ResNet-14-T.", block="bottleneck", layers=(1, 1, 1, 1), **_T),
    "resnet18d": _table("timm ResNet-18-D: deep stem, average-pool downsampling.", **_R18, **_D),
    "resnet34d": _table("timm ResNet-34-D.", **_R34, **_D),
    "resnet26": _table("timm ResNet-26: bottleneck blocks (2, 2, 2, 2).", **_R26),
    "resnet26d": _table("timm ResNet-26-D.", **_R26, **_D),
    "resnet26t": _table("timm ResNet-26-T.", **_R26, **_T),
    "resnet50c": _table("timm ResNet-50-C: deep stem (32, 32, 64).", **_R50, **_C),
    "resnet50d": _table("timm ResNet-50-D: deep stem, average-pool downsampling.", **_R50, **_D),
    "resnet50s": _table("timm ResNet-50-S: deep stem (64, 64, 128).", **_R50, **_S),
    "resnet50t": _table("timm ResNet-50-T.", **_R50, **_T),
    "resnet101c": _table("timm ResNet-101-C.", **_R101, **_C),
    "resnet101d": _table("timm ResNet-101-D.", **_R101, **_D),
    "resnet101s": _table("timm ResNet-101-S.", **_R101, **_S),
    "resnet152c": _table("timm ResNet-152-C.", **_R152, **_C),
    "resnet152d": _table("timm ResNet-152-D.", **_R152, **_D),
    "resnet152s": _table("timm ResNet-152-S.", **_R152, **_S),
    "resnet200": _table("timm ResNet-200: bottleneck blocks (3, 24, 36, 3).", **_R200),
    "resnet200d": _table("timm ResNet-200-D.", **_R200, **_D),
    "resnet50_gn": _table("timm ResNet-50 with GroupNorm (32 groups).", **_R50, norm="group"),
    "resnext50d_32x4d": _table("timm ResNeXt-50-D 32x4d.", **_R50, groups=32, base_width=4, **_D),
    "resnext101_32x4d": _table("timm ResNeXt-101 32x4d.", **_R101, groups=32, base_width=4),
    "resnext101_32x16d": _table("timm ResNeXt-101 32x16d.", **_R101, groups=32, base_width=16),
    "resnext101_32x32d": _table("timm ResNeXt-101 32x32d.", **_R101, groups=32, base_width=32),
    "seresnet18": _table("timm SE-ResNet-18: squeeze-and-excitation in every block.", **_R18, **_SE),
    "seresnet34": _table("timm SE-ResNet-34.", **_R34, **_SE),
    "seresnet50": _table("timm SE-ResNet-50.", **_R50, **_SE),
    "seresnet50t": _table("timm SE-ResNet-50-T.", **_R50, **_T, **_SE),
    "seresnet101": _table("timm SE-ResNet-101.", **_R101, **_SE),
    "seresnet152": _table("timm SE-ResNet-152.", **_R152, **_SE),
    "seresnet152d": _table("timm SE-ResNet-152-D.", **_R152, **_D, **_SE),
    "seresnet200d": _table("timm SE-ResNet-200-D.", **_R200, **_D, **_SE),
    "seresnet269d": _table("timm SE-ResNet-269-D.", **_R269, **_D, **_SE),
    "seresnext26d_32x4d": _table("timm SE-ResNeXt-26-D 32x4d.", **_R26, groups=32, base_width=4, **_D, **_SE),
    "seresnext26t_32x4d": _table("timm SE-ResNeXt-26-T 32x4d.", **_R26, groups=32, base_width=4, **_T, **_SE),
    "seresnext50_32x4d": _table("timm SE-ResNeXt-50 32x4d.", **_R50, groups=32, base_width=4, **_SE),
    "seresnext101_32x4d": _table("timm SE-ResNeXt-101 32x4d.", **_R101, groups=32, base_width=4, **_SE),
    "seresnext101_32x8d": _table("timm SE-ResNeXt-101 32x8d.", **_R101, groups=32, base_width=8, **_SE),
    "seresnext101d_32x8d": _table("timm SE-ResNeXt-101-D 32x8d.", **_R101, groups=32, base_width=8, **_D, **_SE),
    "seresnext101_64x4d": _table("timm SE-ResNeXt-101 64x4d.", **_R101, groups=64, base_width=4, **_SE),
    "ecaresnet26t": _table("timm ECA-ResNet-26-T: efficient channel attention in every block.", **_R26, **_T, **_ECA),
    "ecaresnet50d": _table("timm ECA-ResNet-50-D.", **_R50, **_D, **_ECA),
    "ecaresnet50t": _table("timm ECA-ResNet-50-T.", **_R50, **_T, **_ECA),
    "ecaresnetlight": _table("timm ECA-ResNet-light: bottleneck blocks (1, 1, 11, 3).", block="bottleneck",
                             layers=(1, 1, 11, 3), avg_down=True, **_ECA),
    "ecaresnet101d": _table("timm ECA-ResNet-101-D.", **_R101, **_D, **_ECA),
    "ecaresnet200d": _table("timm ECA-ResNet-200-D.", **_R200, **_D, **_ECA),
    "ecaresnet269d": _table("timm ECA-ResNet-269-D.", **_R269, **_D, **_ECA),
    "ecaresnext26t_32x4d": _table("timm ECA-ResNeXt-26-T 32x4d.", **_R26, groups=32, base_width=4, **_T, **_ECA),
    "ecaresnext50t_32x4d": _table("timm ECA-ResNeXt-50-T 32x4d.", **_R50, groups=32, base_width=4, **_T, **_ECA),
    "resnetrs50": _table("ResNet-RS-50: deep stem, strided-conv stem pool, average-pool downsampling, SE 1/4.",
                         **_R50, **_RS),
    "resnetrs101": _table("ResNet-RS-101.", **_R101, **_RS),
    "resnetrs152": _table("ResNet-RS-152.", **_R152, **_RS),
    "resnetrs200": _table("ResNet-RS-200.", **_R200, **_RS),
    "resnetrs270": _table("ResNet-RS-270.", block="bottleneck", layers=(4, 29, 53, 4), **_RS),
    "resnetrs350": _table("ResNet-RS-350.", block="bottleneck", layers=(4, 36, 72, 4), **_RS),
    "resnetrs420": _table("ResNet-RS-420.", block="bottleneck", layers=(4, 44, 87, 4), **_RS),
    "resnetaa50": _table("timm ResNet-50-AA: anti-aliased downsampling (2x2 average pool after stride-1 convs).",
                         **_R50, **_AA),
    "resnetaa50d": _table("timm ResNet-50-D-AA.", **_R50, **_D, **_AA),
    "resnetaa101d": _table("timm ResNet-101-D-AA.", **_R101, **_D, **_AA),
    "resnetblur50": _table("timm ResNet-50-Blur: blur-pool downsampling (Zhang 2019).", **_R50, **_BLUR),
    "seresnextaa101d_32x8d": _table("timm SE-ResNeXt-101-D-AA 32x8d.", **_R101, groups=32, base_width=8, **_D,
                                    **_SE, **_AA),
    "seresnextaa201d_32x8d": _table("timm SE-ResNeXt-201-D-AA 32x8d: bottleneck blocks (3, 24, 36, 4), deep stem "
                                    "(64, 64, 128).", block="bottleneck", layers=(3, 24, 36, 4), groups=32,
                                    base_width=8, **_S, avg_down=True, **_SE, **_AA),
    "ecaresnet50d_pruned": _table("timm ECA-ResNet-50-D pruned (Knapsack pruning): per-block channels.",
                                  **_R50, **_D, **_ECA, **_ECA50D_PRUNED),
    "ecaresnet101d_pruned": _table("timm ECA-ResNet-101-D pruned.", **_R101, **_D, **_ECA, **_ECA101D_PRUNED),
    "senet154": _table("timm SENet-154 (Hu et al. 2018): SE-ResNeXt-152 64x4d, deep stem (64, 64, 128), half-width "
                       "first convs, 3x3 strided projections.", **_R152, **_SENET),
    # timm's pre-activation ResNetV2 (timm/models/resnetv2.py) and Big Transfer (Kolesnikov et al. 2020).
    "resnetv2_18": _table("timm ResNetV2-18: pre-activation basic blocks.", block="preact_basic", layers=(2, 2, 2, 2)),
    "resnetv2_34": _table("timm ResNetV2-34.", block="preact_basic", layers=(3, 4, 6, 3)),
    "resnetv2_50": _table("timm ResNetV2-50: pre-activation bottlenecks, stride on each stage's first block.",
                          **_TIMM_V2, layers=(3, 4, 6, 3)),
    "resnetv2_101": _table("timm ResNetV2-101.", **_TIMM_V2, layers=(3, 4, 23, 3)),
    "resnetv2_152": _table("timm ResNetV2-152.", **_TIMM_V2, layers=(3, 8, 36, 3)),
    "resnetv2_18d": _table("timm ResNetV2-18-D: deep stem, average-pool projections.", block="preact_basic",
                           layers=(2, 2, 2, 2), **_V2D),
    "resnetv2_34d": _table("timm ResNetV2-34-D.", block="preact_basic", layers=(3, 4, 6, 3), **_V2D),
    "resnetv2_50d_gn": _table("timm ResNetV2-50-D with GroupNorm (32 groups).", **_TIMM_V2, layers=(3, 4, 6, 3),
                              **_V2D, norm="group"),
    "resnetv2_50d_evos": _table("timm ResNetV2-50-D with EvoNorm-S0 (Liu et al. 2020), its own activation.",
                                **_TIMM_V2, layers=(3, 4, 6, 3), **_V2D, norm="evonorm"),
    "resnetv2_50x1_bit": _table("BiT-M R50x1: weight-standardised convs, GroupNorm.", **_bit((3, 4, 6, 3), 1)),
    "resnetv2_50x3_bit": _table("BiT-M R50x3.", **_bit((3, 4, 6, 3), 3)),
    "resnetv2_101x1_bit": _table("BiT-M R101x1.", **_bit((3, 4, 23, 3), 1)),
    "resnetv2_101x3_bit": _table("BiT-M R101x3.", **_bit((3, 4, 23, 3), 3)),
    "resnetv2_152x2_bit": _table("BiT-M R152x2.", **_bit((3, 8, 36, 3), 2)),
    "resnetv2_152x4_bit": _table("BiT-M R152x4.", **_bit((3, 8, 36, 3), 4)),
}


def _builder(name: str, doc: str, defaults: dict) -> Callable[..., ResNet]:
    def build(**kwargs) -> ResNet:
        return ResNet(**{**defaults, **kwargs})

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return build


for _name, (_doc, _kwargs) in ARCHITECTURES.items():
    register_model(_builder(_name, _doc, _kwargs), _name)
