"""Curves to PNG: one run's loss and error, and the degradation figure (the paper's Figures 1 and 6)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from .metrics import read_metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draw a run's per-epoch loss and error (train dashed, evaluation solid) to ``RUN_DIR/curves.png``."""
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    rows = read_metrics(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl with any epoch to plot")
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    split = rows[-1]["eval_split"]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_err, "error", "error (%)")):
        scale = 100 if key == "error" else 1
        ax.plot(epochs, [r[f"train_{key}"] * scale for r in rows], "--", lw=1, label="train")
        ax.plot(epochs, [r[f"eval_{key}"] * scale for r in rows], "-", lw=2, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(str(Path(run_dir).resolve().name))
    fig.tight_layout()
    path = Path(out) if out else Path(run_dir) / "curves.png"
    _save(fig, path)
    return path


def plot_degradation(rows: Sequence[dict[str, Any]], out: str | os.PathLike) -> Path:
    """Plain nets left, ResNets right; thin dashed = training error, bold = test error, one colour per depth.

    ``rows`` have ``kind`` ("plain"/"resnet"), ``depth``, ``epoch``, ``train_error``, ``eval_error``.
    """
    plt = _pyplot()
    depths = sorted({r["depth"] for r in rows})
    colors = dict(zip(depths, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, kind, title in zip(axes, ("plain", "resnet"), ("plain networks", "ResNets")):
        for depth in depths:
            run = sorted((r for r in rows if r["kind"] == kind and r["depth"] == depth), key=lambda r: r["epoch"])
            if not run:
                continue
            epochs = [r["epoch"] for r in run]
            ax.plot(epochs, [100 * r["train_error"] for r in run], "--", lw=1, color=colors[depth])
            ax.plot(epochs, [100 * r["eval_error"] for r in run], "-", lw=2.2, color=colors[depth],
                    label=f"{kind}-{depth}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(title="bold: test, dashed: train")
    axes[0].set_ylabel("error (%)")
    fig.tight_layout()
    path = Path(out)
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    _pyplot().close(fig)
