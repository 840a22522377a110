"""CIFAR-scale data: official python batches, image folders and tars decoded once into tensors; augmentation."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from resnets.data.tensors import load_image_tensors
from resnets.train.augment import RecipeTransforms, crop_flip

SHARED_TEST_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "test.tar"
CLASSES = tuple(f"class{i}" for i in range(10))


def write_fake_cifar(root: Path, per_batch: int = 64, n_test: int = 64, seed: int = 0,
                     classes: tuple[str, ...] = CLASSES) -> dict[str, np.ndarray]:
    """Official-format ``cifar-10-batches-py`` with random, class-tinted images and ``classes`` as its label names;
    returns what was written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}

    def batch(name: str, n: int, split: str) -> None:
        labels = rng.integers(0, 10, n)
        images = (rng.integers(0, 100, (n, 3, 32, 32)) + labels[:, None, None, None] * 15).astype(np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": images.reshape(n, -1), b"labels": labels.tolist()}))
        written[f"{split}_x"].append(images)
        written[f"{split}_y"].append(labels)

    for i in range(1, 6):
        batch(f"data_batch_{i}", per_batch, "train")
    batch("test_batch", n_test, "test")
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in classes]}))
    return {k: np.concatenate(v) for k, v in written.items()}


def write_image_tree(root: Path, split: str, per_class: int, classes=("cat", "dog", "ship"), seed: int = 0) -> dict:
    """``root/split/<class>/<i>.png`` (lossless) and the pixels written, by relative path."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for cls in classes:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            hwc = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(hwc).save(root / split / cls / f"{i:04d}.png")
            pixels[(cls, f"{i:04d}.png")] = hwc
    return pixels


def test_cifar_python_folder_and_archive_match_the_written_batches(tmp_path):
    written = write_fake_cifar(tmp_path / "src")
    train = load_image_tensors(tmp_path / "src", "train", cache_dir=tmp_path / "cache")
    test = load_image_tensors(tmp_path / "src" / "cifar-10-batches-py", "test", cache_dir=tmp_path / "cache")
    assert train.images.dtype == torch.uint8 and train.images.shape == (320, 3, 32, 32)
    np.testing.assert_array_equal(train.images.numpy(), written["train_x"])
    np.testing.assert_array_equal(train.labels.numpy(), written["train_y"])
    np.testing.assert_array_equal(test.images.numpy(), written["test_x"])
    assert train.classes == CLASSES

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = load_image_tensors(archive, "test", cache_dir=tmp_path / "cache2")
    np.testing.assert_array_equal(from_tar.images.numpy(), written["test_x"])
    assert from_tar.classes == CLASSES


def test_image_folder_and_its_tar_decode_to_the_same_pixels_and_are_cached(tmp_path):
    # 3 classes x 100 images > the 256 above which decoding runs in DataLoader workers
    pixels = write_image_tree(tmp_path / "tree", "train", per_class=100)
    write_image_tree(tmp_path / "tree", "val", per_class=2, seed=1)
    cache = tmp_path / "cache"
    train = load_image_tensors(tmp_path / "tree", "train", cache_dir=cache)
    assert train.classes == ("cat", "dog", "ship")
    expected = np.stack([pixels[k].transpose(2, 0, 1) for k in sorted(pixels)])
    np.testing.assert_array_equal(train.images.numpy(), expected)
    np.testing.assert_array_equal(train.labels.numpy(), np.repeat([0, 1, 2], 100))
    assert len(load_image_tensors(tmp_path / "tree", "test", cache_dir=cache)) == 6  # "test" falls back to val/

    with tarfile.open(tmp_path / "train.tar", "w") as tar:
        tar.add(tmp_path / "tree" / "train", arcname="train")
    from_tar = load_image_tensors(tmp_path, "train", cache_dir=cache)  # a folder holding train.tar
    np.testing.assert_array_equal(from_tar.images.numpy(), expected)

    cached = sorted(cache.glob("*.safetensors"))
    assert len(cached) == 3
    os.utime(tmp_path / "train.tar", ns=(1, 1))  # a changed source gets a new cache entry
    load_image_tensors(tmp_path, "train", cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 4


def test_missing_split_names_the_folder(tmp_path):
    write_image_tree(tmp_path, "train", per_class=1)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_image_tensors(tmp_path, "test", cache_dir=tmp_path / "cache")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_TEST_TAR.is_file(), reason="shared CIFAR-10 JPEG tar not available")
def test_shared_jpeg_tar_matches_pil_decoding(tmp_path):
    data = load_image_tensors(SHARED_TEST_TAR, "test", cache_dir=tmp_path)
    assert data.images.shape == (10_000, 3, 32, 32)
    assert data.labels.bincount().tolist() == [1000] * 10
    with tarfile.open(SHARED_TEST_TAR) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for i in (0, 4321, 9999):  # sorted members = the tensor order (class, file name)
            ref = np.asarray(Image.open(tar.extractfile(members[i])).convert("RGB")).transpose(2, 0, 1)
            np.testing.assert_array_equal(data.images[i].numpy(), ref)
            assert data.classes[data.labels[i]] == Path(members[i].name).parent.name


def test_vectorised_crop_flip_matches_torchvision_per_image():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    params = RecipeTransforms(32, "pad-crop").sample(16, g)
    offsets, flips = params[:, :2], params[:, 2].bool()
    out = crop_flip(images, offsets, flips, pad=4)
    for img, (top, left), flip, got in zip(images, offsets.tolist(), flips.tolist(), out):
        ref = TF.crop(TF.pad(img, [4]), top, left, 32, 32)
        torch.testing.assert_close(got, TF.horizontal_flip(ref) if flip else ref, rtol=0, atol=0)
    assert 0 < flips.sum() < 16 and offsets.min() >= 0 and offsets.max() <= 8


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_python_batches_load_with_any_pickle_protocol(tmp_path, protocol):
    written = write_fake_cifar(tmp_path / "src", per_batch=4, n_test=4)
    folder = tmp_path / "src" / "cifar-10-batches-py"
    for name in ("test_batch", "batches.meta"):
        obj = pickle.loads((folder / name).read_bytes())
        (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    test = load_image_tensors(folder, "test", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(test.images.numpy(), written["test_x"])


def test_a_malicious_cifar_batch_is_refused_without_running_code(tmp_path, monkeypatch):
    write_fake_cifar(tmp_path / "src", per_batch=4, n_test=4)
    folder = tmp_path / "src" / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _RunsCode(), b"labels": [0]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR python batch: refusing posix.system"):
        load_image_tensors(folder, "test", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "pwned").exists()


def test_non_square_photos_are_centre_cropped_not_squashed(tmp_path):
    """Training decodes a 96x32 red|green|blue strip to its green centre, as a centre crop must."""
    strip = np.zeros((32, 96, 3), np.uint8)
    strip[:, :32, 0] = strip[:, 32:64, 1] = strip[:, 64:, 2] = 255
    for split in ("train", "test"):
        (tmp_path / split / "strip").mkdir(parents=True)
        Image.fromarray(strip).save(tmp_path / split / "strip" / "0.png")
    data = load_image_tensors(tmp_path, "train", image_size=16, cache_dir=tmp_path / "cache")
    assert data.images.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(data.images[0].float().mean((1, 2)).numpy(), [0, 255, 0], atol=5)  # squashed: ~85 each


def test_training_size_defaults_to_the_models_own():
    from resnets.train.config import default_image_size

    assert default_image_size("resnet20") == 32 and default_image_size("resnet50") == 224
