"""--fast-decode: large JPEGs decoded at a reduced scale give nearly the pixels of a full decode + resize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnets import load_img
from resnets.data.images import ImageFiles
from resnets.preprocess import IMAGENET_TORCH

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-samples"


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    """A 12-megapixel JPEG (phone-photo size) made from the largest shared ImageNet photo."""
    if not SAMPLES.is_dir():
        pytest.skip("shared ImageNet samples not present")
    source = max(SAMPLES.iterdir(), key=lambda p: min(Image.open(p).size))
    path = tmp_path_factory.mktemp("big") / "photo.jpg"
    with Image.open(source) as img:
        img.convert("RGB").resize((4000, 3000), Image.Resampling.LANCZOS).save(path, quality=92)
    return path


def test_a_large_jpeg_decodes_at_a_reduced_scale_still_above_the_resize_size(big_jpeg):
    img = load_img(big_jpeg, min_side=256)
    assert img.size == (500, 375)  # 1/8 scale: the largest reduction whose shorter side is >= 256
    assert load_img(big_jpeg).size == (4000, 3000)


def test_fast_decode_pixels_are_close_to_a_full_decode_and_resize(big_jpeg):
    full = ImageFiles([big_jpeg], IMAGENET_TORCH.crop)[0].image.float()
    fast = ImageFiles([big_jpeg], IMAGENET_TORCH.crop, min_side=256)[0].image.float()
    assert fast.shape == full.shape == (3, 224, 224)
    diff = (fast - full).abs()
    assert diff.mean() < 2.0 and np.percentile(diff.numpy(), 99) < 16, (diff.mean(), diff.max())


def test_small_and_non_jpeg_images_decode_in_full(tmp_path, big_jpeg):
    png = tmp_path / "photo.png"
    Image.open(big_jpeg).save(png)
    assert np.array_equal(np.asarray(load_img(png, min_side=256)), np.asarray(load_img(png)))
    small = tmp_path / "small.jpg"
    Image.open(big_jpeg).resize((400, 300)).save(small)  # under twice 256 on the shorter side: no reduction
    assert np.array_equal(np.asarray(load_img(small, min_side=256)), np.asarray(load_img(small)))
