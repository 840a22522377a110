"""``keras.applications``-style constructors: ``ResNet50(include_top=True, weights=..., ...)``, ``ResNet50V2``...

They return the same :class:`~resnets.networks.ResNet` modules as :func:`resnets.create_model`,
configured the way Keras users expect: ImageNet weights unless ``weights=None``, probabilities out of
the top, or features without it, with Keras' arguments in Keras' order (``include_top, weights,
input_tensor, input_shape, pooling, classes, classifier_activation, name``). Input is NCHW float
tensors (``predict`` also accepts Keras' NHWC numpy batches).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .errors import BadInput
from .networks import ResNet
from .factory import create_model
from .weights.hub import is_hub_name

POOLINGS = (None, "avg", "max")
# Depths with Keras' own ImageNet weights (the paper's Caffe models): ``weights="imagenet"`` picks those,
# so that the Keras flow (caffe ``preprocess_input``) gives Keras' answers.  ResNet-18/34 get torchvision's
# weights, which want ``preprocess_input(x, mode="torch")``; ``model.pretrained_cfg`` always says which.
KERAS_DEPTHS = (50, 101, 152)


def _check_input_shape(input_shape: Sequence[int] | None) -> tuple[int, int, int] | None:
    """Accept Keras' ``(H, W, 3)`` or PyTorch's ``(3, H, W)``; return ``(3, H, W)``."""
    if input_shape is None:
        return None
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise BadInput(f"input_shape must have 3 entries, (H, W, 3) or (3, H, W); got {input_shape}")
    if shape[-1] == 3:
        h, w = shape[:2]
    elif shape[0] == 3:
        h, w = shape[1:]
    else:
        raise BadInput(f"the input must have 3 channels; received input_shape={input_shape}")
    if h < 32 or w < 32:
        raise BadInput(f"input size must be at least 32x32; received input_shape={input_shape}")
    return (3, h, w)


def _tensor_shape(input_tensor: torch.Tensor | np.ndarray | None) -> tuple[int, ...] | None:
    """The image shape an ``input_tensor`` fixes, as Keras' ``Input(tensor=...)`` would: a torch tensor or numpy
    array of images, batched or not, NCHW or NHWC. A Keras tensor (``keras.Input``, a layer's output) belongs to a
    Keras graph, which a PyTorch module cannot join: an error that says what to do instead."""
    if input_tensor is None:
        return None
    if not isinstance(input_tensor, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"input_tensor must be a torch tensor or numpy array of images (it sets the input shape), got "
            f"{type(input_tensor).__name__}: a Keras tensor cannot feed a PyTorch module (build with input_shape=... "
            "and call the model on your tensors), and a shape goes to input_shape, the fourth argument in Keras' "
            "order (include_top, weights, input_tensor, input_shape, ...)"
        )
    shape = tuple(input_tensor.shape)
    if len(shape) not in (3, 4):
        raise BadInput(f"input_tensor must be an image (3 dims) or a batch of them (4 dims), got shape {shape}")
    return shape[-3:]


def keras_resnet(
    depth: int | str,
    include_top: bool = True,
    weights: str | os.PathLike | None = "imagenet",
    input_tensor: torch.Tensor | np.ndarray | None = None,
    input_shape: Sequence[int] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
    *,
    dropout_rate: float = 0.0,
    **kwargs,
) -> ResNet:
    """Build ``resnet{depth}`` (or the registry name ``depth``, e.g. ``"resnet50v2"``) with Keras-application
    semantics and argument checks (see ``ResNet50``); ``name`` (default: the registry name, which is Keras'
    default name) becomes ``model.name``."""
    arch = depth if isinstance(depth, str) else f"resnet{depth}"
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    shape = _check_input_shape(input_shape)  # before any download
    from_tensor = _check_input_shape(_tensor_shape(input_tensor))
    if shape is not None and from_tensor is not None and shape != from_tensor:
        raise BadInput(f"input_tensor's shape {tuple(input_tensor.shape)} contradicts input_shape={input_shape}")
    shape = shape or from_tensor
    if pooling not in POOLINGS:
        raise BadInput(f"pooling must be None, 'avg' or 'max'; received pooling={pooling!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise BadInput(
            "if using weights='imagenet' with include_top=True, classes should be 1000; "
            f"received classes={classes}"
        )
    if (isinstance(weights, str) and weights != "imagenet" and "." not in weights and not is_hub_name(weights)
            and not os.path.exists(weights)):
        raise BadInput(
            "weights must be None (random initialization), 'imagenet' (pre-training on ImageNet), "
            f"a registry name, an hf-hub:ORG/NAME repo or the path to a weights file; received weights={weights!r}"
        )
    if weights == "imagenet" and _has_keras_weights(arch):  # others: create_model's own "imagenet"
        weights = _imagenet_weights(arch, include_top)
    if include_top:
        kwargs.update(num_classes=classes, global_pool="avg", classifier_activation=classifier_activation)
    else:
        kwargs.update(num_classes=0, global_pool=pooling or "")
    model = create_model(arch, weights=weights, drop_rate=dropout_rate, **kwargs)
    model.name = name or arch
    if shape is not None:
        model.input_size = shape
    return model


def _has_keras_weights(name: str) -> bool:
    """Keras publishes ImageNet weights for ResNet50/101/152 and their V2s."""
    return name.removeprefix("resnet").removesuffix("v2") in map(str, KERAS_DEPTHS)


def _imagenet_weights(name: str, include_top: bool = True) -> str:
    """The registry name ``weights="imagenet"`` means for the registry model ``name``."""
    from .weights import get_weights

    if _has_keras_weights(name):
        return f"{name}.keras_in1k" + ("" if include_top else "_notop")
    return get_weights("imagenet", name).name


def _docstring(depth: int, v2: bool = False) -> str:
    from .weights import get_weights

    name = f"resnet{depth}" + ("v2" if v2 else "")
    keras_name = f"ResNet{depth}" + ("V2" if v2 else "")
    keras_weights = _has_keras_weights(name)
    entry = get_weights(_imagenet_weights(name))
    top1 = f", {entry.metrics['top1']:.1f}% top-1 on ImageNet val" if "top1" in entry.metrics else ""
    paper = " (the paper's Caffe weights)" if keras_weights and not v2 else ""
    source = re.split(r" \(|;", entry.source)[0] + paper
    notop = (f"without the top ``{_imagenet_weights(name, False)}``" if keras_weights
             else "without the top the same file less its classifier")
    mode = "tf" if v2 else "caffe" if keras_weights else "torch"
    channels = 2048 if depth >= 50 else 512
    return f"""{keras_name} the Keras way: ``keras.applications.{keras_name}``'s arguments and defaults.

    Returns a :class:`resnets.ResNet` (a ``torch.nn.Module``) in train mode; call ``.eval()`` before inference.

    Args:
        include_top: keep the classifier (default True); False returns pooled features or the feature map.
        weights: ``"imagenet"`` (default, as in Keras) loads ``{entry.name}`` ({source}{top1};
            {notop}), downloaded once into ``$RESNETS_CACHE``
            (default ``~/.cache/resnets``); its inputs are ``preprocess_input(x, mode="{mode}")``, and
            ``model.pretrained_cfg`` records the exact preprocessing. ``None``: random initialisation. Also a
            registry name (``resnets.list_weights("{name}")``) or a weights file.
        input_tensor: a torch tensor or numpy array of images (NCHW or NHWC, batched or not) whose shape sets
            ``input_shape``, as Keras' ``Input(tensor=...)``; a Keras tensor is refused (a PyTorch module cannot
            join a Keras graph).
        input_shape: ``(H, W, 3)`` or ``(3, H, W)``, at least 32x32 (default None: the model's 224x224; any
            size runs, as the pooling is global).
        pooling: without the top, ``None`` (the 4-D feature map, default), ``"avg"`` or ``"max"``.
        classes: classifier size with the top (default 1000; must be 1000 with ``weights="imagenet"``).
        classifier_activation: ``"softmax"`` (default), ``"sigmoid"`` or ``None`` (logits).
        name: the model's ``name`` attribute (default ``"{name}"``, as Keras names it).
        dropout_rate: keyword only, not Keras': dropout before the classifier (default 0.0).
        **kwargs: passed to :class:`resnets.ResNet` (e.g. ``drop_path_rate``, ``zero_init_residual``).

    Differs from Keras: outputs are NCHW tensors (features ``(N, {channels}, 7, 7)``, not ``(N, 7, 7, {channels})``), and
    ``compile``/``fit`` are PyTorch's (``torch.compile``, your own loop or ``resnets train``).
    """


def _constructor(depth: int, v2: bool = False) -> Callable[..., ResNet]:
    arch = f"resnet{depth}" + ("v2" if v2 else "")

    def build(include_top: bool = True, weights: str | os.PathLike | None = "imagenet",
              input_tensor: torch.Tensor | np.ndarray | None = None, input_shape: Sequence[int] | None = None,
              pooling: str | None = None, classes: int = 1000, classifier_activation: str | None = "softmax",
              name: str = arch, *, dropout_rate: float = 0.0, **kwargs) -> ResNet:
        return keras_resnet(arch, include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, name, dropout_rate=dropout_rate, **kwargs)

    build.__name__ = build.__qualname__ = f"ResNet{depth}" + ("V2" if v2 else "")
    build.__doc__ = _docstring(depth, v2)
    return build


ResNet18 = _constructor(18)
ResNet34 = _constructor(34)
ResNet50 = _constructor(50)
ResNet101 = _constructor(101)
ResNet152 = _constructor(152)
ResNet50V2 = _constructor(50, v2=True)
ResNet101V2 = _constructor(101, v2=True)
ResNet152V2 = _constructor(152, v2=True)
