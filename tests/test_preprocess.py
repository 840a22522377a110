"""Preprocessing against its references: torchvision's ImageNet transforms and Keras' preprocess_input."""

from __future__ import annotations

import dataclasses
import itertools
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets import Preprocessing, preprocess_input
from resnets.preprocess import CIFAR10, IMAGENET_CAFFE, IMAGENET_TF, IMAGENET_TORCH

torchvision = pytest.importorskip("torchvision")
from torchvision.models import ResNet50_Weights  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Sizes from 500x333 to 2400x1600; the pencil sharpener is grayscale (mode L).
PHOTOS = ["n02391049_zebra.JPEG", "n07747607_orange.JPEG", "n01440764_tench.JPEG", "n03908714_pencil_sharpener.JPEG"]
# x * (1/255) versus torchvision's x / 255, then the same (x - mean) / std: float32 rounding only.
ATOL = 1e-5


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    paths = [SHARED / "imagenet-samples" / name for name in PHOTOS]
    if not all(p.exists() for p in paths):
        pytest.skip("shared sample photos not available")
    return [Image.open(p) for p in paths]


@pytest.mark.parametrize("weights, recipe", [
    (ResNet50_Weights.IMAGENET1K_V1, IMAGENET_TORCH),
    (ResNet50_Weights.IMAGENET1K_V2, dataclasses.replace(IMAGENET_TORCH, resize_size=232)),
])
def test_matches_torchvision_imagenet_transforms(photos, weights, recipe):
    reference = weights.transforms()
    assert (reference.resize_size, reference.crop_size) == ([recipe.resize_size], [recipe.crop_size])
    for img in photos:
        ours = recipe(img)
        expected = reference(img.convert("RGB"))
        assert ours.shape == expected.shape == (3, 224, 224) and ours.dtype == torch.float32
        torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


def test_caffe_recipe_is_keras_caffe_mode_after_resize_and_crop(keras, photos):
    resize_crop = v2.Compose([v2.Resize(256), v2.CenterCrop(224)])
    for img in photos[:2]:
        pixels = np.asarray(resize_crop(img.convert("RGB")), dtype=np.float32)
        expected = keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode="caffe")
        ours = IMAGENET_CAFFE(img).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)  # 0..255 values: float32 ulp is 1.5e-5


def test_cifar10_recipe_on_cifar_jpegs():
    tar_path = SHARED / "cifar10-jpeg" / "test.tar"
    if not tar_path.exists():
        pytest.skip("shared CIFAR-10 JPEGs not available")
    reference = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with tarfile.open(tar_path) as tar:
        members = list(itertools.islice((m for m in tar if m.name.endswith(".jpg")), 8))
        images = [Image.open(tar.extractfile(m)) for m in members]
        for img in images:
            img.load()
    for img in images:
        assert img.size == (32, 32)
        torch.testing.assert_close(CIFAR10(img), reference(img), atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (5, 7, 3)])
def test_preprocess_input_numpy_matches_keras(keras, mode, shape):
    x = np.random.default_rng(0).uniform(0, 255, size=shape).astype(np.float32)
    original = x.copy()
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
    ours = preprocess_input(x, mode=mode)
    np.testing.assert_array_equal(x, original)  # never in place (Keras is)
    assert isinstance(ours, np.ndarray) and ours.shape == shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-6)
    uint8 = np.rint(x).astype(np.uint8)
    np.testing.assert_allclose(preprocess_input(uint8, mode=mode),
                               keras.applications.imagenet_utils.preprocess_input(uint8, mode=mode),
                               atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_preprocess_input_torch_is_channels_first(keras, mode):
    x = np.random.default_rng(1).uniform(0, 255, size=(2, 3, 6, 5)).astype(np.float32)
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), data_format="channels_first", mode=mode)
    ours = preprocess_input(torch.from_numpy(x), mode=mode)
    assert isinstance(ours, torch.Tensor) and ours.shape == (2, 3, 6, 5)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4, rtol=1e-6)
    chw = preprocess_input(torch.from_numpy(x[0]), mode=mode)
    np.testing.assert_allclose(chw.numpy(), expected[0], atol=1e-4, rtol=1e-6)


def test_tf_recipe_is_keras_tf_mode(keras):
    x = np.random.default_rng(2).uniform(0, 255, size=(3, 4, 4)).astype(np.float32)
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), data_format="channels_first", mode="tf")
    np.testing.assert_allclose(IMAGENET_TF.normalize(torch.from_numpy(x)).numpy(), expected, atol=1e-6)


def test_normalize_uint8_batch_matches_torchvision():
    batch = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    reference = v2.functional.normalize(v2.functional.to_dtype(batch, torch.float32, scale=True),
                                        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    torch.testing.assert_close(IMAGENET_TORCH.normalize(batch), reference, atol=ATOL, rtol=0)


def test_any_pil_mode_gives_three_channels():
    rgba = Image.new("RGBA", (300, 260), (10, 20, 30, 0))
    out = IMAGENET_TORCH(rgba)  # fully transparent: white
    white = (1 - torch.tensor((0.485, 0.456, 0.406))) / torch.tensor((0.229, 0.224, 0.225))
    torch.testing.assert_close(out[:, 0, 0], white)


def test_validation_errors():
    with pytest.raises(ValueError, match="channel_order"):
        Preprocessing((0, 0, 0), (1, 1, 1), channel_order="BRG")
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing((0, 0, 0), (1, 1, 1), interpolation="cubic")
    with pytest.raises(ValueError, match="3 values"):
        Preprocessing((0, 0), (1, 1))
    with pytest.raises(ValueError, match=r"\(2, 5, 7, 4\)"):
        preprocess_input(np.zeros((2, 5, 7, 4)))
    with pytest.raises(ValueError, match="mode"):
        preprocess_input(np.zeros((5, 7, 3)), mode="keras")
    with pytest.raises(ValueError, match=r"\(1, 4, 2, 2\)"):
        preprocess_input(torch.zeros(1, 4, 2, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        IMAGENET_TORCH.crop_size = 10
