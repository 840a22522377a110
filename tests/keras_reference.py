"""Keras reference models for the weight-import tests: random weights, legacy HDF5 writer, old names.

Keras runs on its torch backend (no TensorFlow); import this module before anything imports keras.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ["KERAS_BACKEND"] = "torch"
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

KERAS_RESNETS = {50: "ResNet50", 101: "ResNet101", 152: "ResNet152"}


def keras_resnet(depth: int, include_top: bool = True, size: int | None = None, seed: int = 0, v2: bool = False):
    """A Keras ImageNet ResNet with random weights and random, non-trivial BN statistics.

    With the top, Keras needs a fixed input ``size``; without, any size is accepted.  Kernels are
    He-scaled and BN scales kept below one so activations stay O(1) through the depth.
    """
    build = getattr(keras.applications, KERAS_RESNETS[depth] + ("V2" if v2 else ""))
    model = build(weights=None, include_top=include_top, input_shape=(size, size, 3), classifier_activation=None)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.2, 0.8, n), rng.normal(0, 0.2, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.5, 2.0, n)])
        elif layer.weights:  # a kernel, and a bias where the layer has one (V2's first two convs have none)
            kernel, *bias = (w.shape for w in layer.weights)
            fan_in = int(np.prod(kernel[:-1]))
            layer.set_weights([rng.normal(0, np.sqrt(2 / fan_in), kernel), *(rng.normal(0, 0.2, b) for b in bias)])
    return model


def write_legacy_h5(model, path: Path, rename: Callable[[str], str] = str, full_model: bool = False) -> Path:
    """Write ``model``'s weights in the legacy Keras HDF5 layout of the published files, with h5py.

    Root attribute ``layer_names``; a group per layer with attribute ``weight_names``
    (``<layer>/<var>:0``) and one dataset per weight; BN in order gamma, beta, mean, variance.
    ``full_model`` nests it under ``model_weights`` as ``model.save("x.h5")`` does.
    """
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        names = [rename(layer.name) for layer in model.layers]
        root.attrs["layer_names"] = [n.encode() for n in names]
        root.attrs["keras_version"] = b"2.2.4"
        for name, layer in zip(names, model.layers):
            group = root.create_group(name)
            weight_names = [f"{name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in weight_names]
            for weight_name, value in zip(weight_names, layer.get_weights()):
                group.create_dataset(weight_name, data=value)
    return path


def caffe_old_name(depth: int) -> Callable[[str], str]:
    """Rename ``conv2_block1_1_conv`` style layers to the classic Caffe/Keras ``res2a_branch2a`` style.

    ResNet-50 letters its blocks a, b, c...; the deeper Caffe nets use a, b1, b2, ...
    """

    def block_id(i: int) -> str:
        if depth == 50 or i == 1:
            return string.ascii_lowercase[i - 1]
        return f"b{i - 1}"

    def rename(name: str) -> str:
        fixed = {"conv1_conv": "conv1", "conv1_bn": "bn_conv1", "predictions": "fc1000"}
        if name in fixed:
            return fixed[name]
        parts = name.split("_")  # conv{s}, block{i}, {j}, conv|bn
        if len(parts) != 4 or not parts[1].startswith("block") or parts[3] not in ("conv", "bn"):
            return name
        stage, block, branch = parts[0][-1], int(parts[1][5:]), ("1", "2a", "2b", "2c")[int(parts[2])]
        return f"{'res' if parts[3] == 'conv' else 'bn'}{stage}{block_id(block)}_branch{branch}"

    return rename


def caffe_input(size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    """A random NHWC 0..255 image batch after Keras' ResNet (``caffe``) preprocessing."""
    from keras.applications.resnet import preprocess_input

    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(preprocess_input(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)))
