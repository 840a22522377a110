"""The degradation experiment: plain vs residual nets of several depths, trained alike (Figures 1 and 6)."""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..device import resolve_device
from .config import TrainConfig, default_image_size, make_config
from .loop import train
from .metrics import read_metrics
from .plots import plot_degradation

# quick: the fast-cifar recipe (crop + flip, one-cycle, bf16) on all 50,000 training images for 7 epochs, the
# same for every net; sized for < 45 min on a 2-core CPU. Augmentation keeps the ResNets from merely memorising
# (on 6,400 unaugmented images both reached 0% training error and ResNet-56 tested worse than ResNet-20).
# paper: section 4.2 exactly (64k iterations of batch 128), for a GPU; its estimated time is printed first.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(recipe="fast-cifar", epochs=7, lr=0.1),
    "paper": dict(recipe="paper-cifar"),
}
CSV_FIELDS = ("model", "kind", "depth", "epoch", "step", "train_error", "eval_error", "train_loss", "eval_loss")


def run_degradation(
    data: str | os.PathLike,
    out: str | os.PathLike = "runs/degradation",
    depths: Sequence[int] = (20, 56),
    preset: str = "quick",
    **overrides: Any,
) -> tuple[Path, Path]:
    """Train plain and residual nets of each depth; write ``degradation.csv`` and ``degradation.png`` to ``out``.

    Each net trains in its own run directory under ``out`` and resumes if interrupted.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    settings = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    out = Path(out)
    configs = {f"{kind}{depth}": make_config(model=f"{kind}{depth}", data=str(data), out=str(out / f"{kind}{depth}"),
                                             **settings)
               for kind in ("plain", "resnet") for depth in depths}
    images = _train_images(next(iter(configs.values())))  # the same set for every net: read the split once
    seconds = sum(estimate_seconds(c, images) for c in configs.values())
    print(f"degradation, preset {preset}: {len(configs)} nets; estimated {seconds / 3600:.1f} h of training on "
          f"{resolve_device(next(iter(configs.values())).device)} (timed over a few steps of each net, "
          "data loading and evaluation not counted)", flush=True)
    rows: list[dict[str, Any]] = []
    for kind in ("plain", "resnet"):
        for depth in depths:
            name = f"{kind}{depth}"
            # a rerun continues the nets it has checkpoints of; a fresh run starts them quietly
            train(dataclasses.replace(configs[name], resume=(out / name / "last.pt").is_file()))
            rows += [{"model": name, "kind": kind, "depth": depth, **{k: r[k] for k in CSV_FIELDS[3:]}}
                     for r in read_metrics(out / name)]
    csv_path = out / "degradation.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(final_epoch_summary(rows))
    return csv_path, plot_degradation(rows, out / "degradation.png")


def estimate_seconds(config: TrainConfig, train_images: int, steps: int = 6) -> float:
    """Training time of ``config`` on its device, from ``steps`` timed optimisation steps on random images
    (after two untimed ones), scaled to the run's length over ``train_images`` images. Data loading and
    evaluation are not counted."""
    import torch
    import torch.nn.functional as F

    from ..factory import create_model
    from .precision import AUTOCAST_DTYPE, resolve_precision

    device = resolve_device(config.device)
    size = config.image_size or default_image_size(config.model)
    model = create_model(config.model, num_classes=10, **config.model_kwargs).to(device).train()
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(config.batch_size, 3, size, size, device=device)
    y = torch.randint(0, 10, (config.batch_size,), device=device)
    dtype = AUTOCAST_DTYPE[resolve_precision(config.precision, device)]

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / steps
    total = config.max_steps or config.epochs * (train_images // config.batch_size)
    return per_step * total


def _train_images(config: TrainConfig) -> int:
    """How many training images a run takes (the subset, or the whole training split)."""
    from ..data.source import read_split

    n = len(read_split(config.data, "train")) - config.val_split
    return min(n, config.train_subset) if config.train_subset else n


def final_epoch_summary(rows: Sequence[dict[str, Any]]) -> str:
    """One line per net with its last epoch's training error (the degradation comparison), loss and test error."""
    last: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["epoch"] >= last.get(r["model"], {"epoch": -1})["epoch"]:
            last[r["model"]] = r
    return "final-epoch train error (loss) / test error:\n" + "\n".join(
        f"  {m:<10} {100 * r['train_error']:5.2f}% ({r['train_loss']:.4f}) / {100 * r['eval_error']:5.1f}%"
        f"  (epoch {r['epoch']})"
        for m, r in last.items())
