"""Shared test data: a fixed subset of the real CIFAR-10 test JPEGs and the real resnet20 checkpoint."""

from __future__ import annotations

import functools
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import resnets
from resnets.preprocess import CIFAR10

SHARED = Path(__file__).resolve().parents[2] / "shared"
CHECKPOINT = SHARED / "weights" / "cifar10" / "resnet20-12fca82f.th"
TEST_TAR = SHARED / "data" / "cifar10-jpeg" / "test.tar"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = 250  # 2,500 images: the first 50 per class calibrate int8, the other 2,000 are evaluated


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's torch gets its share of the cores: N workers each using every core would
    oversubscribe them (and OpenMP's spinning threads would stall each other)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--exhaustive", action="store_true",
                     help="also run the per-network sweeps marked 'exhaustive' (every name, not one per kind)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Sweeps repeat a check that one network of each kind already passes in the suite: opt-in, so that the
    suite stays within its ten minutes."""
    if config.getoption("--exhaustive"):
        return
    skip = pytest.mark.skip(reason="a per-network sweep: 'pytest --exhaustive' runs it")
    for item in items:
        if "exhaustive" in item.keywords:
            item.add_marker(skip)


@functools.lru_cache(maxsize=1)
def cifar_test_subset() -> tuple[torch.Tensor, torch.Tensor]:
    """The first PER_CLASS test images of every class, normalised as the checkpoint was trained."""
    if not TEST_TAR.is_file() or not CHECKPOINT.is_file():
        pytest.skip(f"shared CIFAR data not found under {SHARED}")
    images, labels = [], []
    with tarfile.open(TEST_TAR) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or int(Path(parts[2]).stem) >= PER_CLASS:
                continue
            img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
            images.append(torch.from_numpy(np.array(img)).permute(2, 0, 1))
            labels.append(CLASSES.index(parts[1]))
    return CIFAR10.normalize(torch.stack(images)), torch.tensor(labels)


def split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(calibration images, evaluation images, evaluation labels), disjoint."""
    x, y = cifar_test_subset()
    calib = torch.zeros(len(x), dtype=torch.bool)
    for c in range(10):
        calib[torch.nonzero(y == c).flatten()[:50]] = True
    return x[calib], x[~calib], y[~calib]


def logits(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(chunk).float() for chunk in x.split(batch)])


def top1(out: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (out.argmax(1) == y).float().mean().item()


@pytest.fixture(scope="session")
def cifar_model() -> nn.Module:
    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} not found")
    return resnets.create_model("resnet20", weights=CHECKPOINT).eval()


@pytest.fixture(scope="session")
def eager_logits(cifar_model: nn.Module) -> torch.Tensor:
    return logits(cifar_model, split()[1])
