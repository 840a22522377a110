"""Keras ResNet weights import: our model must compute what Keras computes with the same weights.

The reference is ``keras.applications.ResNet50/101`` (torch backend) with random weights and random
BN statistics, saved in the published files' legacy HDF5 layout (written here with h5py), by Keras
itself (``model.save``/``save_weights``), with the classic Caffe layer names, and without the top.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from keras_reference import caffe_input, caffe_old_name, h5py, keras_resnet, write_legacy_h5
from resnets import create_model
from resnets.weights.keras_h5 import read_keras_h5

SIZE = 64
TOL = 1e-4

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def top50():
    """Keras ResNet-50 with top (logits), and its output on a caffe-preprocessed batch."""
    model = keras_resnet(50, include_top=True, size=SIZE, seed=1)
    x = caffe_input(SIZE)
    return model, x, model.predict(x, verbose=0)


@pytest.fixture(scope="module")
def legacy50(top50, tmp_path_factory):
    """``top50`` in the layout of the published ``resnet50_weights_tf_dim_ordering_tf_kernels.h5``."""
    return write_legacy_h5(top50[0], tmp_path_factory.mktemp("keras") / "resnet50.h5")


def ours(path, x: np.ndarray, fold_bias: bool = True, features: bool = False) -> np.ndarray:
    """Our model built from the checkpoint, run on the NHWC batch ``x`` as NCHW."""
    ckpt = read_keras_h5(path, fold_bias=fold_bias)
    model = create_model(ckpt.model_name, **ckpt.model_kwargs)
    model.load_state_dict(ckpt.state_dict, strict=True)
    model.eval()
    with torch.inference_mode():
        nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
        out = model.forward_features(nchw) if features else model(nchw)
    return out.permute(0, 2, 3, 1).numpy() if features else out.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("fold_bias", [True, False])
def test_legacy_h5_logits_match_keras(top50, legacy50, fold_bias):
    _, x, expected = top50
    ckpt = read_keras_h5(legacy50, fold_bias=fold_bias)
    assert (ckpt.depth, ckpt.include_top, ckpt.num_classes) == (50, True, 1000)
    assert ckpt.model_kwargs == dict(stride_in_1x1=True, bn_eps=1.001e-5, conv_bias=not fold_bias, num_classes=1000)
    assert ("conv1.bias" in ckpt.state_dict) is not fold_bias
    got = ours(legacy50, x, fold_bias)
    assert np.abs(expected).max() > 1  # logits are not trivially small
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.slow
def test_notop_feature_map_matches_keras_at_224(tmp_path):
    model = keras_resnet(50, include_top=False, seed=2)
    path = write_legacy_h5(model, tmp_path / "notop.h5")
    ckpt = read_keras_h5(path)
    assert (ckpt.depth, ckpt.include_top, ckpt.num_classes, ckpt.model_kwargs["num_classes"]) == (50, False, 0, 0)
    x = caffe_input(224, batch=1, seed=3)
    expected = model.predict(x, verbose=0)
    assert expected.shape == (1, 7, 7, 2048)
    np.testing.assert_allclose(ours(path, x, features=True), expected, rtol=0, atol=TOL)


def test_classic_layer_names_in_full_model_save(top50, tmp_path):
    """``res2a_branch2a``/``bn_conv1``/``fc1000`` names, weights under ``model_weights``."""
    model, x, expected = top50
    path = write_legacy_h5(model, tmp_path / "classic.h5", rename=caffe_old_name(50), full_model=True)
    with h5py.File(path) as f:
        assert {"res2a_branch2a", "bn2a_branch1", "res5c_branch2c", "fc1000"} <= set(f["model_weights"])
    np.testing.assert_allclose(ours(path, x), expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["saved.h5", "saved.weights.h5", "saved.keras"])
def test_files_saved_by_keras(top50, tmp_path, name):
    """Keras' own writers: legacy full-model ``.h5``, Keras 3 ``.weights.h5`` and ``.keras`` archives."""
    model, x, expected = top50
    path = tmp_path / name
    model.save_weights(path) if name.endswith(".weights.h5") else model.save(path)
    np.testing.assert_allclose(ours(path, x, fold_bias=False), expected, rtol=0, atol=TOL)


@pytest.mark.slow
def test_resnet101_caffe_block_numbering(tmp_path):
    """Depth from the block counts, and Caffe's ``res4b1``..``res4b22`` numbering of deep nets."""
    model = keras_resnet(101, include_top=False, seed=4)
    path = write_legacy_h5(model, tmp_path / "resnet101_notop.h5", rename=caffe_old_name(101))
    with h5py.File(path) as f:
        assert {"res4a_branch1", "res4b1_branch2a", "res4b22_branch2c", "bn3b3_branch2b"} <= set(f)
    assert read_keras_h5(path).depth == 101
    x = caffe_input(SIZE, batch=1, seed=5)
    np.testing.assert_allclose(ours(path, x, features=True), model.predict(x, verbose=0), rtol=0, atol=TOL)


def _edit_copy(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def test_errors_name_file_and_layer(legacy50, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.h5"):
        read_keras_h5(tmp_path / "absent.h5")

    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"notes\.h5: not an HDF5 file"):
        read_keras_h5(text)

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"other\.h5: not a Keras weights file"):
        read_keras_h5(other)

    def drop_layer(f):
        f.attrs["layer_names"] = [n for n in f.attrs["layer_names"] if n != "conv3_block2_2_conv"]
        del f["conv3_block2_2_conv"]

    missing = _edit_copy(legacy50, tmp_path / "missing.h5", drop_layer)
    # One shape check, against the model being built, names the tensor and the file's own layer.
    with pytest.raises(ValueError, match=r"missing\.h5 do not fit resnet50: the model's layer2\.1\.conv2\.weight .*"
                                         r"missing from the weights \(Keras layer 'conv3_block2_2_conv'\)"):
        create_model("resnet50", weights=missing)

    def widen_kernel(f):
        del f["conv2_block1_2_conv/conv2_block1_2_conv/kernel:0"]
        f["conv2_block1_2_conv/conv2_block1_2_conv/kernel:0"] = np.zeros((3, 3, 32, 64), np.float32)

    bad = _edit_copy(legacy50, tmp_path / "shape.h5", widen_kernel)
    shapes = r"\(64, 32, 3, 3\).*\(64, 64, 3, 3\)"
    with pytest.raises(ValueError, match=rf"shape\.h5 do not fit resnet50: .*{shapes}.*'conv2_block1_2_conv'"):
        create_model("resnet50", weights=bad)


def test_rejects_layers_of_other_networks(legacy50, tmp_path):
    """A V1 file with a ResNetV2 layer (``conv2_block1_preact_bn``) is neither network: refused, naming the file
    and a layer that does not belong (read as V2, the V1 stem's ``conv1_bn``)."""

    def rename(f):
        f.attrs["layer_names"] = [n.replace("conv2_block1_1_bn", "conv2_block1_preact_bn")
                                  for n in f.attrs["layer_names"]]
        f.move("conv2_block1_1_bn", "conv2_block1_preact_bn")

    path = _edit_copy(legacy50, tmp_path / "v2.h5", rename)
    with pytest.raises(ValueError, match=r"v2\.h5: layer 'conv1_bn' is not part of a Keras ResNet50V2"):
        read_keras_h5(path)
