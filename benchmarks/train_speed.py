"""Training speed (images/s, data pipeline included): the trainer vs a straightforward PyTorch loop.

The straightforward loop is what a tutorial writes: a DataLoader over PIL images with torchvision's
RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, an fp32 NCHW model, SGD. It is
measured two ways: over PIL images decoded once and kept in memory (the strict baseline: no JPEG decoding
left in the loop), and as the PyTorch CIFAR-10 tutorial writes it, ``torchvision.datasets.ImageFolder`` over
the JPEG files with ``num_workers=2`` (``--tutorial``; the files are extracted to a temporary folder first).
The trainer is ``resnets.train.train`` itself on the same images (uint8 tensor cache, vectorised
augmentation, channels-last, optional bf16 autocast); its images/s comes from its own metrics.

    python benchmarks/train_speed.py --data ../shared/data/cifar10-jpeg --threads 1
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from resnets import create_model
from resnets.data.tensors import load_image_tensors
from resnets.preprocess import CIFAR10
from resnets.train import make_config, train

TUTORIAL_TRANSFORM = transforms.Compose([
    transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
    transforms.Normalize(CIFAR10.mean, CIFAR10.std),
])


class PILImages(Dataset):
    def __init__(self, images: list[Image.Image], labels: list[int]) -> None:
        self.images, self.labels = images, labels
        self.transform = TUTORIAL_TRANSFORM

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def extract_jpegs(data_dir: str, per_class: int, into: Path) -> Path:
    """The first ``per_class`` training JPEGs of each class from ``data_dir``'s train.tar, as an image folder."""
    counts: dict[str, int] = {}
    with tarfile.open(Path(data_dir) / "train.tar") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and counts.get(parts[1], 0) < per_class:
                counts[parts[1]] = counts.get(parts[1], 0) + 1
                tar.extract(member, into, filter="data")
    return into / "train"


def baseline_images_per_s(model_name: str, data: Dataset, batch_size: int, workers: int = 0) -> float:
    """One epoch of the straightforward fp32 NCHW loop over ``data``."""
    torch.manual_seed(0)
    model = create_model(model_name).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(2):  # the second epoch is measured, as for the trainer
        seen, start = 0, time.perf_counter()
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
    return seen / (time.perf_counter() - start)


def trainer_images_per_s(model_name: str, data_dir: str, n: int, batch_size: int, precision: str,
                         threads: int | None, compile: bool = False) -> float:
    """``resnets.train.train`` on ``n`` training images for two epochs; the second epoch's images/s (its own
    measurement, evaluation excluded), so that warm-up and compilation are not counted."""
    with tempfile.TemporaryDirectory() as out:
        config = make_config("fast-cifar", model=model_name, data=data_dir, out=out, epochs=2,
                             batch_size=batch_size, train_subset=n, test_subset=batch_size, precision=precision,
                             threads=threads, progress=False, compile=compile)
        return train(config)["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg")
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--images", type=int, default=1024, help="training images per measurement (one epoch)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="add a column: trainer bf16 with torch.compile")
    parser.add_argument("--tutorial", action="store_true",
                        help="add a column: the PyTorch tutorial's loop (ImageFolder over the JPEGs, 2 workers)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    subset = load_image_tensors(args.data, "train").subset(range(0, 50_000, 50_000 // args.images)[: args.images])
    pil = PILImages([Image.fromarray(x.permute(1, 2, 0).numpy()) for x in subset.images], subset.labels.tolist())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images, batch {args.batch_size}")
    header = f"{'model':10} {'baseline fp32':>14} {'trainer fp32':>13} {'trainer bf16':>13} {'speed-up bf16':>14}"
    header += f" {'bf16+compile':>13} {'speed-up':>9}" if args.compile else ""
    print(header + (f" {'tutorial fp32':>14} {'best / tutorial':>16}" if args.tutorial else ""))
    tmp = tempfile.TemporaryDirectory()
    if args.tutorial:
        folder = datasets.ImageFolder(str(extract_jpegs(args.data, args.images // 10, Path(tmp.name))),
                                      TUTORIAL_TRANSFORM)
    for name in args.models.split(","):
        base = baseline_images_per_s(name, pil, args.batch_size)
        fp32 = trainer_images_per_s(name, args.data, args.images, args.batch_size, "fp32", args.threads)
        bf16 = trainer_images_per_s(name, args.data, args.images, args.batch_size, "bf16", args.threads)
        line = f"{name:10} {base:14.0f} {fp32:13.0f} {bf16:13.0f} {bf16 / base:13.2f}x"
        if args.compile:
            fast = trainer_images_per_s(name, args.data, args.images, args.batch_size, "bf16", args.threads, True)
            line += f" {fast:13.0f} {fast / base:8.2f}x"
        if args.tutorial:
            tutorial = baseline_images_per_s(name, folder, args.batch_size, workers=2)
            best = max(bf16, fast) if args.compile else bf16
            line += f" {tutorial:14.0f} {best / tutorial:15.2f}x"
        print(line, flush=True)
    tmp.cleanup()


if __name__ == "__main__":
    main()
