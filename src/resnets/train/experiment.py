"""The degradation experiment: plain vs residual nets of several depths, trained alike (Figures 1 and 6)."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UnknownName
from ..device import resolve_device
from .config import TrainConfig, default_image_size, make_config
from .loop import train
from .metrics import read_metrics
from .plots import plot_degradation

if TYPE_CHECKING:
    import torch

# tiny: the plain-net half only, for a short CPU budget: quick's recipe on a 10,000-image subset for 4 epochs,
# evaluated on 1,000 test images; the ResNet half (the deeper ResNet ahead) needs longer training (README).
# quick: the fast-cifar recipe (crop + flip, one-cycle, bf16 where native) on all training images for 7 epochs, the
# same for every net: both halves. Augmentation keeps the ResNets from merely memorising (on 6,400 unaugmented
# images both reached 0% training error and ResNet-56 tested worse than ResNet-20).
# paper: section 4.2 exactly (64k iterations of batch 128), for a GPU; its estimated time is printed first.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(recipe="fast-cifar", epochs=4, lr=0.1, train_subset=10_000, test_subset=1_000),
    "quick": dict(recipe="fast-cifar", epochs=7, lr=0.1),
    "paper": dict(recipe="paper-cifar"),
}
#: The smallest preset whose runs showed both halves (README, "The degradation problem").
BOTH_HALVES = "quick"
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
        raise UnknownName(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    settings = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    out = Path(out)
    configs = {f"{kind}{depth}": make_config(model=f"{kind}{depth}", data=str(data), out=str(out / f"{kind}{depth}"),
                                             **settings)
               for kind in ("plain", "resnet") for depth in depths}
    first = next(iter(configs.values()))
    all_train, train_images, eval_images = _split_sizes(first)  # the same sets for every net: read the splits once
    seconds = sum(estimate_seconds(c, train_images, eval_images) for c in configs.values())
    print(f"degradation, preset {preset}: {len(configs)} nets; estimated {_duration(seconds)} of training and "
          f"evaluation on {resolve_device(first.device)} (timed over a few steps of each net; reading and decoding "
          "the images not counted)", flush=True)
    steps, needed = _steps(first, train_images), _steps(make_config(**PRESETS[BOTH_HALVES], data=str(data)), all_train)
    if steps < needed:
        print(f"degradation: {steps:,} steps per net are too few to show the ResNet half (the deeper ResNet "
              f"training better); the {BOTH_HALVES} preset's {needed:,} showed it. Expect the plain-net half only",
              flush=True)
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
    if shown := halves_shown(rows, steps):
        print(shown)
    return csv_path, plot_degradation(rows, out / "degradation.png")


def estimate_seconds(config: TrainConfig, train_images: int, eval_images: int = 0, steps: int = 6) -> float:
    """Training and evaluation time of ``config`` on its device: ``steps`` timed optimisation steps and as many
    evaluation batches on random images (after two untimed ones each), scaled to the run's length over
    ``train_images`` images and an evaluation of ``eval_images`` after each epoch. Reading and decoding the
    images are not counted."""
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

    eval_x = torch.randn(min(config.eval_batch_size, max(eval_images, 1)), 3, size, size, device=device)

    @torch.no_grad()
    def evaluate() -> None:  # fp32, as the trainer evaluates
        model.eval()
        model(eval_x)
        model.train()

    total = _steps(config, train_images)
    epochs = math.ceil(total / max(1, train_images // config.batch_size))
    eval_batches = epochs * math.ceil(eval_images / len(eval_x))
    threads = torch.get_num_threads()
    if config.threads:  # the run's own thread count
        torch.set_num_threads(config.threads)
    try:
        return _seconds_per_call(step, steps, device) * total + (
            _seconds_per_call(evaluate, max(1, steps // 3), device) * eval_batches if eval_batches else 0.0)
    finally:
        torch.set_num_threads(threads)


def _seconds_per_call(work: Callable[[], None], calls: int, device: torch.device) -> float:
    """Mean seconds of ``work`` over ``calls`` timed calls, after two untimed ones."""
    import torch

    for _ in range(2):
        work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def _steps(config: TrainConfig, train_images: int) -> int:
    """Optimisation steps of a run of ``config`` over ``train_images`` images."""
    return config.max_steps or config.epochs * (train_images // config.batch_size)


def _duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _split_sizes(config: TrainConfig) -> tuple[int, int, int]:
    """The training split's images, how many of them a run trains on (its subset) and evaluates on."""
    from ..data.source import read_split

    n = len(read_split(config.data, "train")) - config.val_split
    evaluated = config.val_split or len(read_split(config.data, "test"))
    return (n, min(n, config.train_subset) if config.train_subset else n,
            min(evaluated, config.test_subset) if config.test_subset else evaluated)


def _last_rows(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each net's last epoch."""
    last: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["epoch"] >= last.get(r["model"], {"epoch": -1})["epoch"]:
            last[r["model"]] = r
    return last


def halves_shown(rows: Sequence[dict[str, Any]], steps: int) -> str:
    """Whether the run shows each half of the paper's finding, by the last training error of the shallowest and
    the deepest net of a kind: the deeper plain net higher (degradation), the deeper ResNet lower."""
    last = _last_rows(rows)
    lines = []
    for kind, finding in (("plain", "the deeper plain net trains worse"), ("resnet", "the deeper ResNet trains better")):
        nets = sorted((r for r in last.values() if r["kind"] == kind), key=lambda r: r["depth"])
        if len(nets) < 2:
            continue
        shallow, deep = nets[0], nets[-1]
        shown = (deep["train_error"] > shallow["train_error"]) == (kind == "plain")
        errors = (f"{deep['model']} {100 * deep['train_error']:.2f}% vs {shallow['model']} "
                  f"{100 * shallow['train_error']:.2f}% training error")
        why = "" if shown or kind == "plain" else (f"; {steps:,} steps per net are too few: train longer "
                                                   f"(--preset {BOTH_HALVES}, or more --epochs)")
        lines.append(f"  {'plain-net' if kind == 'plain' else 'ResNet'} half ({finding}): "
                     f"{'shown' if shown else 'not shown'} ({errors}){why}")
    return "\n".join(["degradation:", *lines]) if lines else ""


def final_epoch_summary(rows: Sequence[dict[str, Any]]) -> str:
    """One line per net with its last epoch's training error (the degradation comparison), loss and test error."""
    last = _last_rows(rows)
    return "final-epoch train error (loss) / test error:\n" + "\n".join(
        f"  {m:<10} {100 * r['train_error']:5.2f}% ({r['train_loss']:.4f}) / {100 * r['eval_error']:5.1f}%"
        f"  (epoch {r['epoch']})"
        for m, r in last.items())
