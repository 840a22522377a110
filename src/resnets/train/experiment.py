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

# quick: a CIFAR-10 subset, bf16, the paper's step schedule scaled down to 5 epochs (max_steps=0: epochs
# decide) after a short linear warm-up; sized for < 30 min on a 2-core CPU.
# paper: section 4.2 exactly (64k iterations of batch 128), for a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(recipe="paper-cifar", max_steps=0, epochs=5, batch_size=128, train_subset=8000,
                  test_subset=1000, precision="bf16", warmup_fraction=0.1),
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
            config = make_config(model=name, data=str(data), out=str(out / name), resume=True, **settings)
            train(config)
            rows += [{"model": name, "kind": kind, "depth": depth, **{k: r[k] for k in CSV_FIELDS[3:]}}
                     for r in read_metrics(out / name)]
    csv_path = out / "degradation.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path, plot_degradation(rows, out / "degradation.png")
