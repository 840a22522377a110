"""Keras ResNet50V2/101V2/152V2 files load exactly: legacy HDF5, Keras 3 ``.weights.h5`` and ``.keras``, with and
without the top, against Keras 3's own outputs (torch backend, random weights and BN statistics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from keras_reference import keras, keras_resnet, write_legacy_h5

import resnets
from resnets.preprocess import IMAGENET_TF, preprocess_input

SIZE = 64


def tf_input(size: int = SIZE, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Keras "tf"-mode input: NHWC in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def compare(model, path, x: np.ndarray, **kwargs) -> float:
    """Relative max error of resnets' model from ``path`` against Keras' ``model`` on NHWC ``x``."""
    expected = model.predict(x, verbose=0)
    ours = resnets.create_model(weights=path, **kwargs).eval()
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    if got.ndim == 4:
        got = got.transpose(0, 2, 3, 1)  # our NCHW feature map as Keras' NHWC
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def top50():
    return keras_resnet(50, include_top=True, size=SIZE, v2=True)


def test_legacy_h5_with_top_gives_keras_outputs(top50, tmp_path):
    path = write_legacy_h5(top50, tmp_path / "resnet50v2.h5")
    assert compare(top50, path, tf_input()) < 1e-4
    model = resnets.create_model(weights=path)
    assert model.pretrained_cfg.model == "resnet50v2" and model.pretrained_cfg.preprocessing == IMAGENET_TF


@pytest.mark.parametrize("fmt", [".weights.h5", ".keras"])
def test_keras3_files_give_keras_outputs(top50, tmp_path, fmt):
    path = tmp_path / f"resnet50v2{fmt}"
    top50.save_weights(path) if fmt == ".weights.h5" else top50.save(path)
    assert compare(top50, path, tf_input(seed=1)) < 1e-4


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_without_top_pooled_or_feature_map(tmp_path, pooling):
    model = keras_resnet(50, include_top=False, v2=True, seed=2)
    path = write_legacy_h5(model, tmp_path / "notop.h5")
    reference = keras.Sequential([model, *([keras.layers.GlobalAveragePooling2D()] if pooling == "avg" else
                                           [keras.layers.GlobalMaxPooling2D()] if pooling == "max" else [])])
    kwargs = dict(num_classes=0, global_pool=pooling or "")
    assert compare(reference, path, tf_input(seed=3), **kwargs) < 1e-4


@pytest.mark.exhaustive
@pytest.mark.parametrize("depth", [101, 152])
def test_deeper_v2_files_give_keras_outputs(tmp_path, depth):
    model = keras_resnet(depth, include_top=True, size=SIZE, v2=True, seed=depth)
    path = write_legacy_h5(model, tmp_path / f"resnet{depth}v2.h5")
    assert compare(model, path, tf_input(seed=4)) < 1e-4


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_parameter_counts_equal_keras(depth):
    """Keras counts the BN moving statistics among its parameters; resnets.summarize says both."""
    reference = getattr(keras.applications, f"ResNet{depth}V2")(weights=None)
    with torch.device("meta"):
        ours = resnets.create_model(f"resnet{depth}v2")
    summary = resnets.summarize(ours, (3, 224, 224), print_fn=None, depth=1)
    assert summary.keras_total_params == reference.count_params()
    trainable = sum(int(np.prod(w.shape)) for w in reference.trainable_weights)
    assert summary.total_params == trainable


def test_tf_mode_preprocessing_is_keras_resnet_v2s():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = np.asarray(keras.applications.resnet_v2.preprocess_input(x.copy()))
    np.testing.assert_allclose(preprocess_input(x.copy(), mode="tf"), expected, rtol=0, atol=1e-6)


def test_a_v1_layer_in_a_v2_file_is_named(top50, tmp_path):
    from keras_reference import h5py

    path = write_legacy_h5(top50, tmp_path / "mixed.h5")
    with h5py.File(path, "a") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        f.move("conv2_block1_1_bn", "conv2_block1_1_xx")
        f.attrs["layer_names"] = [("conv2_block1_1_xx" if n == "conv2_block1_1_bn" else n).encode() for n in names]
    with pytest.raises(ValueError, match="conv2_block1_1_xx.*ResNet50V2"):
        resnets.create_model(weights=path)


def test_keras_face_takes_keras_arguments_and_files(top50, tmp_path):
    path = write_legacy_h5(top50, tmp_path / "resnet50v2.h5")
    x = tf_input(seed=5)
    model = resnets.ResNet50V2(weights=path, input_shape=(SIZE, SIZE, 3), classifier_activation=None).eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    expected = top50.predict(x, verbose=0)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4
    probs = resnets.ResNet50V2(weights=path).eval()(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)  # Keras' default softmax top


@pytest.mark.parametrize("keras_name", ["ResNet50", "ResNet50V2", "ResNet152V2"])
def test_keras_face_has_keras_signature(keras_name):
    """Keras' parameters in Keras' order with Keras' defaults (``name`` included); ours adds keyword-only ones."""
    import inspect

    theirs = inspect.signature(getattr(keras.applications, keras_name)).parameters
    ours = inspect.signature(getattr(resnets, keras_name)).parameters
    positional = [p for p in ours.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == [(p.name, p.default) for p in theirs.values()]


def test_keras_face_positional_sigmoid_top_input_tensor_and_name(top50, tmp_path):
    """Keras' positional order, a sigmoid top equal to Keras' logits through a sigmoid, ``name``, and an
    ``input_tensor`` of images setting the input shape; a Keras tensor or a shape there is refused, clearly."""
    path = write_legacy_h5(top50, tmp_path / "resnet50v2.h5")
    x = tf_input(seed=6)
    model = resnets.ResNet50V2(True, path, None, (SIZE, SIZE, 3), None, 1000, "sigmoid", "tagger").eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    expected = 1 / (1 + np.exp(-top50.predict(x, verbose=0)))
    assert np.abs(got - expected).max() < 1e-5 and model.name == "tagger"
    images = torch.zeros(4, SIZE + 32, SIZE, 3)  # NHWC, as a Keras user holds them
    default = resnets.ResNet50V2(weights=None, input_tensor=images)
    assert default.input_size == (3, SIZE + 32, SIZE) and default.name == "resnet50v2"
    with pytest.raises(TypeError, match="a Keras tensor cannot feed a PyTorch module"):
        resnets.ResNet50V2(weights=None, input_tensor=keras.Input((SIZE, SIZE, 3)))
    with pytest.raises(TypeError, match="input_shape, the fourth argument"):
        resnets.ResNet50V2(False, None, (SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="contradicts input_shape"):
        resnets.ResNet50V2(weights=None, input_tensor=images, input_shape=(SIZE, SIZE, 3))


def test_keras_face_argument_checks_and_imagenet_names():
    from resnets.keras_api import _imagenet_weights

    with pytest.raises(ValueError, match="pooling must be None, 'avg' or 'max'"):
        resnets.ResNet101V2(weights=None, include_top=False, pooling="sum")
    with pytest.raises(ValueError, match="classes should be 1000"):
        resnets.ResNet152V2(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="3 channels"):
        resnets.ResNet50V2(weights=None, input_shape=(64, 64, 4))
    assert _imagenet_weights("resnet50v2") == "resnet50v2.keras_in1k"
    assert _imagenet_weights("resnet152v2", include_top=False) == "resnet152v2.keras_in1k_notop"
    entry = resnets.get_weights("resnet101v2.keras_in1k")
    assert entry.preprocessing == IMAGENET_TF and entry.file_format == "keras_h5"
    features = resnets.ResNet50V2(weights=None, include_top=False, pooling="max")
    assert features(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
