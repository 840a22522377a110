"""Models with weights: ``create_model`` and one torchvision-style builder per network.

The top of the model layers (timm's order): :mod:`.registry` knows architectures, :mod:`.weights`
reads files against it, and this module joins the two, so ``resnets.resnet50(weights="imagenet")``
works as in torchvision and ``create_model(weights="run/best.safetensors")`` needs no name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from torch import nn

from .errors import BadInput, UnknownName
from .networks import FeatureResNet, ResNet
from .registry import ARCHITECTURES, model_builder
from .weights.hub import timm_catalogue
from .weights.loading import create_with_weights, default_weights
from .weights.registry import WEIGHTS

Weights = str | os.PathLike | None


def create_model(
    name: str | None = None,
    weights: Weights = None,
    num_classes: int | None = None,
    *,
    pretrained: bool = False,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, with random weights or with ``weights`` loaded.

    ``weights``: None or ``"none"`` (random), a registry name (``"resnet50.tv_in1k_v2"``), the alias
    ``"imagenet"`` or ``"cifar10"`` (the model's default weights of that kind), or a local file
    (``.pth/.pt/.th``, Keras ``.h5``/``.keras``, ``.safetensors``). ``name`` may be left out when the
    weights say which network they are; a name that contradicts them is an error. ``num_classes``
    defaults to the model's own (1000 ImageNet nets, 10 CIFAR nets) or the weights' class count
    (``0`` drops the classifier; another count than the weights' gives a fresh classifier, with a warning).
    Other keyword arguments go to :class:`~resnets.networks.ResNet` (``cache_dir=`` and ``progress=`` to
    the download). The model's ``pretrained_cfg`` says what the weights are: architecture, classes,
    preprocessing, metrics, source.

    timm's habits: ``pretrained=True`` loads the name's default weights (``weights="imagenet"``, else
    ``"cifar10"``, else timm's best ImageNet-1k checkpoint; see :func:`resnets.weights.loading.default_weights`),
    and ``name`` may carry a weights tag (``"resnet50.tv_in1k"``: those weights with ``pretrained=True``, the bare
    architecture without). ``features_only=True`` returns a :class:`~resnets.networks.FeatureResNet` whose forward
    gives the feature maps of ``out_indices`` (default all: the stem's, then each stage's), with
    ``feature_info.channels()`` and ``.reduction()``, as timm's.
    """
    if not isinstance(pretrained, bool):
        raise BadInput(f"pretrained must be True or False, got {pretrained!r}")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise BadInput(f"num_classes must be a non-negative int (0 drops the classifier), got {num_classes!r}")
        kwargs["num_classes"] = num_classes
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    name, tagged = _split_tag(name)
    if tagged is not None and weights is not None:
        raise BadInput(f"{tagged!r} names its weights already: pass pretrained=True, or the bare model name "
                       f"{name!r} with weights=")
    if pretrained:
        if weights is not None:
            raise BadInput(f"pretrained=True loads the model's default weights and weights={str(weights)!r} others: "
                           "pass one of them")
        if name is None:
            raise BadInput("pretrained=True needs a model name (create_model(NAME, pretrained=True))")
        weights = tagged or default_weights(name)
    if out_indices is not None and not features_only:
        raise BadInput("out_indices= picks the maps of a features_only=True model: pass features_only=True too")
    if features_only:
        if num_classes:
            raise BadInput(f"a features_only=True model has no classifier: drop num_classes={num_classes}")
        kwargs.update(num_classes=0, global_pool="")
    model = _build(name, weights, **kwargs)
    if not features_only:
        return model
    if not isinstance(model, ResNet):
        raise BadInput(f"features_only=True is built for resnets.ResNet networks, and {name} is a "
                       f"{type(model).__name__}: call its own feature method")
    return FeatureResNet.from_network(model, out_indices)


def _build(name: str | None, weights: Weights, **kwargs) -> nn.Module:
    if weights is None:
        if name is None:
            raise BadInput("create_model needs a model name, or weights that name their network")
        kwargs.pop("cache_dir", None)
        kwargs.pop("progress", None)
        return model_builder(name)(**kwargs)
    return create_with_weights(name, weights, **kwargs)


def _split_tag(name: str | None) -> tuple[str | None, str | None]:
    """timm's ``"architecture.tag"`` names: the architecture, and the weights the whole name is (None untagged)."""
    if name is None or "." not in name:
        return name, None
    entry = WEIGHTS.get(name) or timm_catalogue().get(name)
    if entry is None:
        raise UnknownName(f"unknown model {name!r}: a tagged name must be one of the weights of 'resnets weights "
                          "list' (resnets.list_weights()) or timm's catalogue; a bare name is an architecture")
    return entry.model, name


#: ResNet's keyword arguments with their defaults, as the builders' docstrings list them.
_RESNET_ARGUMENTS = (
    "``stem_width``, ``stem_pool`` (\"max\", \"max_zero_pad\", \"conv\" or \"\"), ``down_last`` (stride in each "
    "stage's last block, Keras V2), ``drop_path_rate`` (stochastic depth), ``zero_init_residual`` (False), "
    "``global_pool`` (\"avg\", \"max\" or \"\"), ``drop_rate`` (0.0), ``classifier_activation`` (None, \"softmax\" "
    "or \"sigmoid\"), ``in_chans`` (3), ``num_classes``, ``block_channels`` (per-block widths of the pruned "
    "nets), and the block options (``block_options``, see "
    ":class:`resnets.BlockOptions`): ``shortcut`` (\"A\", \"B\", \"C\" or \"P\"), ``stride_in_1x1`` (False: v1.5), "
    "``groups``/``base_width`` (ResNeXt, Wide), ``attn`` (None, \"se\" or \"eca\"), ``norm`` (\"batch\", "
    "\"group\" or \"evonorm\"), ``conv`` (\"plain\" or \"std\"), ``avg_down``, ``aa`` (None, \"avg\" or \"blur\": "
    "anti-aliased downsampling), ``reduce_first`` and ``down_kernel`` (SENet-154), ``dropout`` (between the "
    "convs), ``conv_bias`` (False), ``bn_eps`` (1e-5); each network's defaults are its registry entry's"
)


def _builder(name: str) -> Callable[..., nn.Module]:
    def build(*, weights: Weights = None, progress: bool = True, **kwargs) -> nn.Module:
        return create_model(name, weights=weights, progress=progress, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__module__ = "resnets"
    build.__doc__ = (
        f"{model_builder(name).__doc__}\n\n"
        "Keyword arguments:\n\n"
        f"- ``weights``: None (random, the default), ``\"imagenet\"``/``\"cifar10\"`` (the model's default "
        f"weights of that kind), a registry name from ``resnets.list_weights(\"{name}\")`` or a local file, as "
        "in :func:`create_model`.\n"
        "- ``progress``: show a download progress bar (default True); ``cache_dir``: the weights cache "
        "(default: $RESNETS_CACHE, else ~/.cache/resnets).\n"
        "- ``num_classes``: classifier size (default: the model's, or the weights' class count; 0 drops it).\n"
        "- the rest go to :class:`resnets.ResNet`: " + _RESNET_ARGUMENTS + ".\n\n"
        "Returns a :class:`resnets.ResNet` (an ``nn.Module``) in train mode; ``model.pretrained_cfg`` says "
        "what the weights are."
    )
    return build


#: ``resnets.resnet50(weights=...)`` and friends, one per registered architecture.
BUILDERS: dict[str, Callable[..., nn.Module]] = {name: _builder(name) for name in ARCHITECTURES}
