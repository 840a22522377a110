"""timm's ResNetV2 / BiT state dicts (timm/models/resnetv2.py) under resnets' parameter names.

timm's pre-activation nets name their tensors ``stem.conv`` (deep "d" stems: ``stem.conv1``, ``stem.norm1``,
``stem.conv2``, ``stem.norm2``, ``stem.conv3``), ``stages.S.blocks.B.(norm1|conv1|...)``,
``stages.S.blocks.B.downsample.conv``, ``norm`` and ``head.fc`` (a 1x1 convolution); ours are ``conv1``
(deep: the ``nn.Sequential`` ``conv1.0``, ``conv1.1``, ``conv1.3``, ``conv1.4``, ``conv1.6``),
``layer{S+1}.B.(norm1|conv1|...)``, ``layer{S+1}.B.downsample`` (the bare conv; ``downsample.1`` after the
average pool of the deep-stem nets, which all pool), ``norm`` and ``fc`` (a linear layer).  timm's
resnet.py nets (``resnet50d``, ``seresnext26d_32x4d``...) already use our names and need nothing from here.
"""

from __future__ import annotations

import re

import torch

from ..errors import BadWeights
from ..registry import list_models

_STAGE = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)")
_PARAMS = r"(weight|bias|v|running_mean|running_var|num_batches_tracked)"  # v: EvoNorm-S0's gate
_BLOCK_PARTS = re.compile(r"(norm[123]|conv[123])\." + _PARAMS)
_DEEP_STEM = re.compile(r"stem\.(conv1|norm1|conv2|norm2|conv3)\." + _PARAMS)
_DEEP_STEM_INDEX = {"conv1": 0, "norm1": 1, "conv2": 3, "norm2": 4, "conv3": 6}  # ResNet's deep-stem Sequential


def is_timm_resnetv2(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether the tensors are named as timm's ResNetV2 names them (``stem.conv``, ``stages.*.blocks.*``)."""
    return "stem.conv.weight" in state_dict or any(_STAGE.match(k) for k in state_dict)


def _rename(key: str, avg_down: bool) -> str | None:
    if key.startswith("stem.conv."):
        return "conv1." + key.removeprefix("stem.conv.")
    if m := _DEEP_STEM.fullmatch(key):
        return f"conv1.{_DEEP_STEM_INDEX[m.group(1)]}.{m.group(2)}"
    if key.startswith(("norm.", "head.fc.")):
        return key.removeprefix("head.")
    m = _STAGE.fullmatch(key)
    if m is None:
        return None
    stage, block, rest = m.groups()
    prefix = f"layer{int(stage) + 1}.{block}."
    if rest.startswith("downsample.conv."):
        return prefix + ("downsample.1." if avg_down else "downsample.") + rest.removeprefix("downsample.conv.")
    return prefix + rest if _BLOCK_PARTS.fullmatch(rest) else None


def from_timm_resnetv2(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ResNetV2 / BiT state dict with resnets' names; the 1x1-conv classifier becomes a linear one.

    A tensor with no counterpart in our networks (timm's non-pre-activation ViT-hybrid stems, say) is a
    ``ValueError`` naming it.
    """
    avg_down = "stem.conv1.weight" in state_dict  # timm's deep-stem ResNetV2s all pool before projecting
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        new = _rename(key, avg_down)
        if new is None:
            raise BadWeights(
                f"tensors named as timm's ResNetV2 names them (stem.conv, stages.*.blocks.*), but {key} "
                f"{tuple(tensor.shape)} has no counterpart in resnets' networks (of timm's resnetv2.py, only the "
                "pre-activation resnetv2_18 ... resnetv2_152, their deep-stem 'd' forms and the BiT resnetv2_*_bit "
                "layouts are read)"
            )
        if new == "fc.weight" and tensor.ndim == 4:
            tensor = tensor.flatten(1)
        out[new] = tensor
    return out


def timm_resnetv2_name(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The registered network a converted timm ResNetV2 state dict is (``resnetv2_50``, ``resnetv2_50d_gn``,
    ``resnetv2_50x1_bit``)."""
    blocks = {m.group(1, 2) for k in state_dict if (m := re.match(r"(layer\d+)\.(\d+)\.", k))}
    deep = "conv1.0.weight" in state_dict
    stem = state_dict.get("conv1.6.weight" if deep else "conv1.weight")
    if not blocks or stem is None or stem.ndim != 4:
        return None
    bottleneck = "layer1.0.conv3.weight" in state_dict
    depth = len(blocks) * (3 if bottleneck else 2) + 2
    batchnorm = "layer1.0.norm1.running_mean" in state_dict or "norm.running_mean" in state_dict
    if deep:  # timm's "d" nets: BatchNorm, GroupNorm (_gn) or EvoNorm-S0 (_evos, its gate ``v``)
        suffix = "" if batchnorm else "_evos" if "layer1.0.norm1.v" in state_dict else "_gn"
        name = f"resnetv2_{depth}d{suffix}"
    elif batchnorm:
        name = f"resnetv2_{depth}"  # timm's resnetv2_18 ... resnetv2_152
    else:
        name = f"resnetv2_{depth}x{stem.shape[0] // 64}_bit"  # GroupNorm: Big Transfer
    return name if name in list_models() else None
