"""The degradation experiment: plain vs residual nets of several depths, trained alike (Figures 1 and 6)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import make_config
from .loop import train
from .metrics import read_metrics
from .plots import plot_degradation

# quick: degradation is an optimisation effect, read on the training error (how well a net fits its training
# set), so a CIFAR-10 subset without augmentation seen for many epochs (1,000 iterations of batch 128;
# giving epochs replaces the recipe's length in iterations), bf16, one-cycle with a linear warm-up; the same recipe for every net; sized for
# < 30 min on a 2-core CPU. (With crop+flip and 975 iterations ResNet-56 still trailed ResNet-20 in training error.)
# paper: section 4.2 exactly (64k iterations of batch 128), for a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(recipe="paper-cifar", epochs=20, batch_size=128, train_subset=6400,
                  test_subset=1000, augment=False, precision="bf16", schedule="onecycle", warmup_fraction=0.15),
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
    rows: list[dict[str, Any]] = []
    for kind in ("plain", "resnet"):
        for depth in depths:
            name = f"{kind}{depth}"
            # a rerun continues the nets it has checkpoints of; a fresh run starts them quietly
            config = make_config(model=name, data=str(data), out=str(out / name),
                                 resume=(out / name / "last.pt").is_file(), **settings)
            train(config)
            rows += [{"model": name, "kind": kind, "depth": depth, **{k: r[k] for k in CSV_FIELDS[3:]}}
                     for r in read_metrics(out / name)]
    csv_path = out / "degradation.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(final_epoch_summary(rows))
    return csv_path, plot_degradation(rows, out / "degradation.png")


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
