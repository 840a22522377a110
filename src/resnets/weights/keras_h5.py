"""Read Keras ImageNet ResNet50/101/152 and ResNet50V2/101V2/152V2 weights (``.h5``) into resnets names.

The published Keras V1 files (ported from the paper's Caffe models) are a v1 ResNet (stride on the
first 1x1 conv) with conv biases and BN epsilon 1.001e-5; the V2 files are pre-activation ResNets
(registry ``resnet50v2``: Keras' layout, biases on the stem, shortcut and last conv of each block, none
on the two convs before a norm).  Three containers are read:

* legacy Keras HDF5 (``save_weights``/``model.save`` before Keras 3): root attribute ``layer_names``,
  one group per layer with attribute ``weight_names``, or the same under a ``model_weights`` group;
* Keras 3 ``.weights.h5``: ``layers/<auto name>/vars/0..n`` with the layer name as an attribute;
* Keras 3 ``.keras`` archives, which hold such a ``model.weights.h5``.

Both layer namings are understood: ``conv2_block1_1_conv`` (Keras >= 2.2.5) and the classic
``res2a_branch2a``/``bn2a_branch2a`` (Caffe style, also ``res4b22`` for the deeper nets).  Note that
the classic ``keras_applications/resnet50.py`` ran these weights with Keras' default BN epsilon
1e-3; we use the Caffe/modern-Keras 1.001e-5 (pass ``bn_eps=1e-3`` to reproduce the old outputs).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import BadWeights
from ..blocks import Bottleneck
from ..networks import IMAGENET_DEPTHS

KERAS_BN_EPS = 1.001e-5

_NEW_NAME = re.compile(r"conv(?P<stage>[2-5])_block(?P<block>\d+)_(?P<branch>[0-3])_(?P<kind>conv|bn)")
_OLD_NAME = re.compile(r"(?P<kind>res|bn)(?P<stage>[2-5])(?P<letter>[a-z])(?P<num>\d*)_branch(?P<branch>1|2a|2b|2c)")
_OLD_BRANCH = {"1": 0, "2a": 1, "2b": 2, "2c": 3}
_STEM = {"conv1_conv": "conv1", "conv1": "conv1", "conv1_bn": "bn1", "bn_conv1": "bn1"}
_CLASSIFIER = ("predictions", "fc1000")
# ResNetV2 (keras/src/applications/resnet.py, residual_block_v2): layer part -> module of a PreActBottleneck.
_V2_NAME = re.compile(r"conv(?P<stage>[2-5])_block(?P<block>\d+)_(?P<part>preact_bn|0_conv|1_conv|1_bn|2_conv|2_bn|3_conv)")
_V2_PART = {"preact_bn": "norm1", "0_conv": "downsample", "1_conv": "conv1", "1_bn": "norm2", "2_conv": "conv2",
            "2_bn": "norm3", "3_conv": "conv3"}


@dataclass(frozen=True)
class KerasCheckpoint:
    """A Keras ResNet checkpoint translated to resnets names, and how to build its model."""

    state_dict: dict[str, torch.Tensor]
    depth: int
    include_top: bool
    num_classes: int
    model_kwargs: dict = field(default_factory=dict)
    layer_names: dict[str, str] = field(default_factory=dict)  # resnets module -> Keras layer name
    v2: bool = False  # a pre-activation ResNetV2

    @property
    def model_name(self) -> str:
        """The registry name to build: ``create_model(ckpt.model_name, **ckpt.model_kwargs)``."""
        return f"resnet{self.depth}" + ("v2" if self.v2 else "")


# --- reading the containers ---------------------------------------------------------------


def _attr_list(group, name: str) -> list[str]:
    """A string-list attribute, which Keras splits into ``name0``, ``name1``... when it is large."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for chunk in chunks for n in np.atleast_1d(chunk)]


def _legacy_layers(group) -> Iterator[tuple[str, list[np.ndarray]]]:
    """(layer name, weights in saved order) of a legacy group, as Keras reads it: by position.

    Weight names are not trusted (TF1-era files can say ``conv1_conv_1/kernel:0`` for ``conv1_conv``).
    """
    for layer_name in _attr_list(group, "layer_names"):
        if layer_name not in group:
            raise BadWeights(f"layer {layer_name!r} is listed in 'layer_names' but has no group")
        layer = group[layer_name]
        if weight_names := _attr_list(layer, "weight_names"):
            yield layer_name, [layer[w][()] for w in weight_names]


def _keras3_layers(group) -> list[tuple[str, list[np.ndarray]]]:
    """(layer name, weights in saved order) of a Keras 3 ``.weights.h5`` ``layers`` group."""
    found: list[tuple[str, list[np.ndarray]]] = []

    def visit(path: str, obj) -> None:
        if path.rsplit("/", 1)[-1] == "vars" and len(obj):
            if "name" not in obj.attrs:
                raise BadWeights(f"layer group {obj.name!r} has no 'name' attribute (saved by an older Keras 3); "
                                 "re-save it with a recent Keras, or as a legacy .h5 file")
            found.append((str(obj.attrs["name"]), [obj[k][()] for k in sorted(obj, key=int)]))

    group.visititems(visit)
    return found


def _read_layers(h5) -> dict[str, list[np.ndarray]]:
    """Every layer with weights, by name, whichever Keras layout the open file has."""
    if "layer_names" not in h5.attrs and "layer_names0" not in h5.attrs and "model_weights" in h5:
        h5 = h5["model_weights"]
    if "layer_names" in h5.attrs or "layer_names0" in h5.attrs:
        layers = _legacy_layers(h5)
    elif "layers" in h5 and hasattr(h5["layers"], "visititems"):
        layers = _keras3_layers(h5["layers"])
    else:
        raise BadWeights("not a Keras weights file (no 'layer_names' attribute, 'model_weights' group "
                         "or Keras 3 'layers' group)")
    out: dict[str, list[np.ndarray]] = {}
    for name, weights in layers:
        if name in out:
            raise BadWeights(f"layer {name!r} appears twice")
        out[name] = weights
    return out


def _open_h5(path: Path):
    """An open ``h5py.File`` for a ``.h5`` file or the weights inside a ``.keras`` archive."""
    import h5py

    from .h5guard import check_global_heaps, check_hdf5_file  # damage that would hang libhdf5

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if "model.weights.h5" not in zf.namelist():
                raise BadWeights("a zip archive without model.weights.h5 is not a .keras model")
            data = zf.read("model.weights.h5")
            check_global_heaps(data)
            return h5py.File(io.BytesIO(data), "r")
    if not h5py.is_hdf5(path):
        raise BadWeights("not an HDF5 file")
    check_hdf5_file(path)
    return h5py.File(path, "r")


# --- Keras layer names to resnets modules ---------------------------------------------------


def _v2_module_name(layer: str) -> str | None:
    """The resnets module a Keras ResNetV2 layer maps to (``layer3.0.norm2``), or None if unknown."""
    if layer == "conv1_conv":
        return "conv1"
    if layer == "post_bn":
        return "norm"
    if layer in _CLASSIFIER:
        return "fc"
    if m := _V2_NAME.fullmatch(layer):
        return f"layer{int(m['stage']) - 1}.{int(m['block']) - 1}.{_V2_PART[m['part']]}"
    return None


def _module_name(layer: str) -> str | None:
    """The resnets module a Keras layer maps to (``layer3.0.downsample.1``), or None if unknown."""
    if layer in _STEM:
        return _STEM[layer]
    if layer in _CLASSIFIER:
        return "fc"
    if m := _NEW_NAME.fullmatch(layer):
        stage, block, branch, kind = int(m["stage"]), int(m["block"]) - 1, int(m["branch"]), m["kind"]
    elif m := _OLD_NAME.fullmatch(layer):
        letter = ord(m["letter"]) - ord("a")
        # Caffe's deep nets number blocks res4a, res4b1, res4b2, ...; ResNet-50 uses letters a..f.
        block = int(m["num"]) if m["num"] else letter
        if m["num"] and letter != 1:
            return None
        stage, branch, kind = int(m["stage"]), _OLD_BRANCH[m["branch"]], "conv" if m["kind"] == "res" else "bn"
    else:
        return None
    prefix = f"layer{stage - 1}.{block}"
    if branch == 0:
        return f"{prefix}.downsample.{0 if kind == 'conv' else 1}"
    return f"{prefix}.{kind}{branch}"


def _kind(module: str) -> str:
    """``conv``, ``bn`` or ``fc``: what a resnets module is."""
    if module == "fc":
        return "fc"
    last = module.rsplit(".", 1)[-1]
    return "bn" if last.startswith(("bn", "norm")) or module.endswith("downsample.1") else "conv"


def _bn_of(conv: str) -> str:
    """The BN module that follows a conv module."""
    if conv.endswith("downsample.0"):
        return conv[:-1] + "1"
    return conv[: -len("conv1")] + "bn" + conv[-1]


def keras_layer_name(module: str, layer_names: dict[str, str]) -> str:
    """The Keras layer of a resnets module: the file's own name, else the Keras >= 2.2.5 name (for messages)."""
    if module in layer_names:
        return layer_names[module]
    if module == "fc":
        return "predictions"
    if module == "norm":
        return "post_bn"
    if (part := module.rsplit(".", 1)[-1]) in _V2_PART.values():
        stage, block = module.split(".")[:2]
        v2_part = next(k for k, v in _V2_PART.items() if v == part)
        return f"conv{int(stage[-1]) + 1}_block{int(block) + 1}_{v2_part}"
    if module in ("conv1", "bn1"):
        return f"conv1_{_kind(module)}"
    stage, block, *rest = module.split(".")
    branch = "0" if rest[0] == "downsample" else rest[0][-1]
    return f"conv{int(stage[-1]) + 1}_block{int(block) + 1}_{branch}_{_kind(module)}"


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _translate(layer: str, module: str, weights: list[np.ndarray], zero_bias: bool = True) -> dict[str, torch.Tensor]:
    """One Keras layer's weights as resnets parameters (conv biases kept under ``.bias``; a conv without one
    gets a zero bias when ``zero_bias``, as V1 models built with ``conv_bias=True`` have one on every conv)."""
    kind = _kind(module)
    expected = {"conv": (1, 2), "fc": (2,), "bn": (4,)}[kind]
    if len(weights) not in expected:
        raise BadWeights(f"layer {layer!r}: expected {' or '.join(map(str, expected))} weights for a {kind} layer, "
                         f"found {len(weights)} with shapes {[w.shape for w in weights]}")
    if kind == "bn":
        names = ("weight", "bias", "running_mean", "running_var")
        return {f"{module}.{n}": _to_tensor(w) for n, w in zip(names, weights)} | {
            f"{module}.num_batches_tracked": torch.tensor(0)
        }
    kernel, ndim = weights[0], 2 if kind == "fc" else 4
    if kernel.ndim != ndim or any(w.shape != (kernel.shape[-1],) for w in weights[1:]):
        raise BadWeights(f"layer {layer!r}: unexpected shapes {[w.shape for w in weights]} for a {kind} layer "
                         f"(kernel {'(in, out)' if ndim == 2 else '(H, W, in, out)'} and bias (out,))")
    out = {f"{module}.weight": _to_tensor(kernel.T if ndim == 2 else kernel.transpose(3, 2, 0, 1))}
    if len(weights) == 2:
        out[f"{module}.bias"] = _to_tensor(weights[1])
    elif zero_bias:
        out[f"{module}.bias"] = torch.zeros(kernel.shape[-1])
    return out


def _infer_depth(modules: set[str]) -> int:
    """The ImageNet depth whose bottleneck block counts match the blocks found per stage."""
    blocks = tuple(
        len({m.split(".")[1] for m in modules if m.startswith(f"layer{s}.")}) for s in range(1, 5)
    )
    for depth, (block, layers) in IMAGENET_DEPTHS.items():
        if block is Bottleneck and tuple(layers) == blocks:
            return depth
    raise BadWeights(f"blocks per stage {blocks} match no bottleneck ResNet (50: (3, 4, 6, 3), "
                     "101: (3, 4, 23, 3), 152: (3, 8, 36, 3))")


def _fold_biases(state: dict[str, torch.Tensor], convs: list[str]) -> None:
    """Move each conv bias into the BN after it: BN(conv(x) + b) == BN'(conv(x)) with mean' = mean - b."""
    for conv in convs:
        mean = f"{_bn_of(conv)}.running_mean"
        if mean not in state:  # a missing BN: left for the shape check against the model to name
            continue
        bias = state.pop(f"{conv}.bias")
        state[mean] = (state[mean].double() - bias.double()).float()


def read_keras_h5(path: str | os.PathLike, fold_bias: bool = True) -> KerasCheckpoint:
    """Read a Keras ResNet50/101/152 or ResNet50V2/101V2/152V2 weights file into resnets names, exactly.

    V1: with ``fold_bias`` each conv bias is folded into the following BN's running mean (exact at
    inference), so the model needs no conv biases; otherwise the model is built with
    ``conv_bias=True``. V2 keeps its biases (none is followed by a BN). Errors name the file and the
    offending layer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras weights file not found: {path}")
    try:
        with _open_h5(path) as h5:
            layers = _read_layers(h5)
        state: dict[str, torch.Tensor] = {}
        keras_name: dict[str, str] = {}
        v2 = any(name == "post_bn" or name.endswith("_preact_bn") for name in layers)
        for layer, weights in layers.items():
            module = _v2_module_name(layer) if v2 else _module_name(layer)
            if module is None:
                family = "ResNet50V2/101V2/152V2" if v2 else "v1 ResNet50/101/152"
                raise BadWeights(f"layer {layer!r} is not part of a Keras {family} (custom heads are not supported)")
            if module in keras_name:
                raise BadWeights(f"layers {keras_name[module]!r} and {layer!r} both map to {module}")
            keras_name[module] = layer
            state |= _translate(layer, module, weights, zero_bias=not v2)
        if "conv1" not in keras_name:
            raise BadWeights("missing layer 'conv1_conv' (or 'conv1'): not a ResNet weights file")
        depth = _infer_depth(set(keras_name))
        num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 0
        if v2:  # the registry's resnetNv2 is Keras' layout; only the head varies
            return KerasCheckpoint(state, depth, num_classes > 0, num_classes, {"num_classes": num_classes},
                                   keras_name, v2=True)
        kwargs = dict(stride_in_1x1=True, bn_eps=KERAS_BN_EPS, conv_bias=True, num_classes=num_classes)
        if fold_bias:
            _fold_biases(state, [m for m in keras_name if _kind(m) == "conv"])
            kwargs["conv_bias"] = False
    except (ValueError, KeyError, OSError, RuntimeError) as e:  # h5py: RuntimeError for damaged structures
        raise BadWeights(f"{path}: {e}") from e
    return KerasCheckpoint(state, depth, num_classes > 0, num_classes, kwargs, keras_name)
