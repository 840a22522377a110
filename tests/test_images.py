"""Image loading: parity with Keras' load_img/img_to_array/array_to_img, every PIL mode, bad files, datasets."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data.images import (
    ImageFiles, ImageLoadError, array_to_img, collate_images, find_images, img_to_array, load_img,
)

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-samples"
PHOTOS = ["n02391049_zebra.JPEG", "n07747607_orange.JPEG", "n03908714_pencil_sharpener.JPEG"]  # last is mode L


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def blocks(h: int = 32, w: int = 48) -> np.ndarray:
    """An RGB test card of flat 16x16 colour blocks (survives JPEG nearly losslessly), not symmetric."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(h // 16, w // 16, 3), dtype=np.uint8)
    return colours.repeat(16, axis=0).repeat(16, axis=1)


def photo(name: str) -> Path:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"shared sample photos not available ({path})")
    return path


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("kwargs", [
    {},
    {"target_size": (224, 224)},
    {"target_size": (100, 150), "interpolation": "bilinear"},
    {"target_size": (64, 64), "interpolation": "bicubic", "keep_aspect_ratio": True},
    {"color_mode": "grayscale", "target_size": (50, 70), "interpolation": "lanczos"},
    {"color_mode": "rgba"},
])
def test_load_img_and_img_to_array_match_keras(keras, name, kwargs):
    path = photo(name)
    ours = img_to_array(load_img(path, **kwargs))
    reference = keras.utils.img_to_array(keras.utils.load_img(path, **kwargs))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference)
    ours_first = img_to_array(load_img(path, **kwargs), data_format="channels_first")
    np.testing.assert_array_equal(ours_first, keras.utils.img_to_array(keras.utils.load_img(path, **kwargs),
                                                                          data_format="channels_first"))


@pytest.mark.parametrize("shape", [(5, 7, 3), (5, 7, 4), (5, 7, 1), (3, 5, 7)])
@pytest.mark.parametrize("scale", [True, False])
def test_array_to_img_matches_keras(keras, shape, scale):
    x = np.random.default_rng(1).uniform(0, 255, size=shape).astype(np.float32)
    fmt = "channels_first" if shape[0] == 3 else "channels_last"
    ours, reference = array_to_img(x, data_format=fmt, scale=scale), keras.utils.array_to_img(x, fmt, scale)
    assert ours.mode == reference.mode
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
    big = array_to_img(np.full((2, 2, 1), 1000.0), scale=False)
    assert big.mode == keras.utils.array_to_img(np.full((2, 2, 1), 1000.0), scale=False).mode == "I"


def _save(tmp_path: Path, name: str, img: Image.Image, **params) -> Path:
    path = tmp_path / name
    img.save(path, **params)
    return path


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    rgb = blocks()
    path = _save(tmp_path, "cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=100)
    assert Image.open(path).mode == "CMYK"
    out = img_to_array(load_img(path))
    assert out.shape == rgb.shape
    assert np.abs(out - rgb).max() <= 8  # JPEG round trip of flat blocks


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    levels = np.random.default_rng(2).integers(0, 256, size=(8, 8), dtype=np.uint16)
    path = _save(tmp_path, "gray16.png", Image.fromarray(levels * 257))  # 8-bit level v is 16-bit v * 257
    assert Image.open(path).mode == "I;16"
    out = img_to_array(load_img(path))
    np.testing.assert_array_equal(out, np.repeat(levels[:, :, None], 3, axis=2).astype(np.float32))
    np.testing.assert_array_equal(img_to_array(load_img(path, color_mode="grayscale"))[:, :, 0], levels)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_tiff_is_scaled(tmp_path, mode):
    levels = np.random.default_rng(3).integers(0, 256, size=(6, 9)).astype(np.float64)
    data = (levels * 257).astype(np.int32) if mode == "I" else (levels / 255).astype(np.float32)
    path = _save(tmp_path, f"{mode}.tif", Image.fromarray(data))
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(img_to_array(load_img(path))[:, :, 1], levels)


def test_transparency_is_composited_on_white(tmp_path):
    rgb = blocks().astype(np.float64)
    alpha = np.random.default_rng(4).integers(0, 256, size=rgb.shape[:2]).astype(np.float64)
    rgba = np.dstack([rgb, alpha]).astype(np.uint8)
    expected = rgb * alpha[:, :, None] / 255 + 255 * (1 - alpha[:, :, None] / 255)
    path = _save(tmp_path, "rgba.png", Image.fromarray(rgba))
    assert np.abs(img_to_array(load_img(path)) - expected).max() <= 1
    np.testing.assert_array_equal(img_to_array(load_img(path, color_mode="rgba")), rgba)

    gray = rgb[:, :, 0]
    la = Image.fromarray(np.dstack([gray, alpha]).astype(np.uint8), "LA")
    expected_gray = gray * alpha / 255 + 255 * (1 - alpha / 255)
    out = img_to_array(load_img(_save(tmp_path, "la.png", la)))
    assert np.abs(out - expected_gray[:, :, None]).max() <= 1


def test_palette_transparency_is_white(tmp_path):
    indices = np.tile(np.arange(4, dtype=np.uint8), (4, 2))
    img = Image.fromarray(indices, "P")
    palette = [255, 0, 0, 0, 128, 0, 0, 0, 255, 10, 20, 30]
    img.putpalette(palette + [0] * (768 - len(palette)))
    path = _save(tmp_path, "palette.png", img, transparency=1)
    out = img_to_array(load_img(path))
    colours = np.array(palette, np.float32).reshape(4, 3)
    colours[1] = 255
    np.testing.assert_array_equal(out, colours[indices])


def test_exif_orientation_is_applied(tmp_path):
    rgb = blocks(32, 48)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # stored sideways: the viewer rotates it 90 degrees clockwise
    path = _save(tmp_path, "rotated.jpg", img, exif=exif, quality=100, subsampling=0)
    out = img_to_array(load_img(path))
    upright = np.rot90(rgb, k=-1)
    assert out.shape == upright.shape == (48, 32, 3)
    assert np.abs(out - upright).max() <= 8


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG whose header claims ``width x height`` pixels but holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.jpg"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "truncated":
        noise = np.random.default_rng(5).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(path, quality=90)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "bomb":
        path = path.with_suffix(".png")
        path.write_bytes(_png_claiming(100_000, 100_000))
    return path


@pytest.mark.parametrize("kind, reason", [
    ("missing", "not found"), ("directory", "directory"), ("empty", "empty"), ("text", "not an image"),
    ("truncated", "truncated"), ("bomb", "decompression bomb"),
])
def test_bad_files_raise_image_load_error(tmp_path, kind, reason):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_img(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert isinstance(info.value, ValueError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.path, copy.reason) == (info.value.path, info.value.reason)


@pytest.mark.parametrize("side", [40, 100])  # PIL warns above the limit and errors above twice it
def test_decompression_bomb_limit_is_pils(tmp_path, monkeypatch, side):
    path = _save(tmp_path, "big.png", Image.new("RGB", (side, side)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_img(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", side * side)
    assert load_img(path).size == (side, side)


def test_argument_errors(tmp_path):
    path = _save(tmp_path, "ok.png", Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="color_mode"):
        load_img(path, color_mode="cmyk")
    with pytest.raises(ValueError, match="interpolation"):
        load_img(path, target_size=(2, 2), interpolation="cubic")
    with pytest.raises(TypeError, match="height, width"):
        load_img(path, "grayscale")


def test_find_images(tmp_path):
    for rel in ["b.jpg", "a.PNG", "notes.txt", "sub/c.jpeg", "sub/deeper/d.webp", ".hidden/e.jpg", "sub/._f.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert find_images(tmp_path) == [tmp_path / p for p in ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.webp"]]
    assert find_images(tmp_path, recursive=False) == [tmp_path / "a.PNG", tmp_path / "b.jpg"]
    assert find_images([tmp_path / "notes.txt", tmp_path / "sub"]) == [
        tmp_path / "notes.txt", tmp_path / "sub/c.jpeg", tmp_path / "sub/deeper/d.webp"]
    with pytest.raises(FileNotFoundError, match="nope"):
        find_images(tmp_path / "nope")


def test_image_files_skip_bad_files_across_workers(tmp_path):
    rgb = blocks()
    good = [_save(tmp_path, f"good{i}.png", Image.fromarray(np.roll(rgb, i, axis=1))) for i in range(3)]
    paths = [good[0], _bad_file(tmp_path, "text"), good[1], _bad_file(tmp_path, "empty"), good[2]]
    dataset = ImageFiles(paths, transform=lambda img: torch.from_numpy(img_to_array(img)).permute(2, 0, 1))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_images)
    batches = list(loader)
    assert [b.indices.tolist() for b in batches] == [[0, 2], [4]]
    assert [[i for i, _ in b.errors] for b in batches] == [[1, 3], []]
    assert "text.jpg: not an image" in batches[0].errors[0][1] and "empty" in batches[0].errors[1][1]
    for batch in batches:
        for image, index in zip(batch.images, batch.indices):
            np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), np.asarray(Image.open(paths[index])))
    assert dataset[0].image.dtype == torch.float32
    assert ImageFiles(paths)[2].image.dtype == torch.uint8  # default: uint8 CHW pixels
    all_bad = collate_images([dataset[1]])
    assert all_bad.images.numel() == 0 and all_bad.indices.tolist() == [] and len(all_bad.errors) == 1
