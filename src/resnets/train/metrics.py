"""Per-epoch metrics of a run: appended to ``metrics.csv`` and ``metrics.jsonl``, read back for plots."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

# eval_loss is the evaluation split's NLL (plain cross-entropy, no smoothing), eval_ece its expected calibration
# error (resnets.calibration: 15 bins); with model_ema eval_* is the average's, raw_eval_* the trained weights'.
FIELDS = ("epoch", "step", "lr", "train_loss", "train_error", "eval_loss", "eval_error", "eval_ece", "eval_split",
          "epoch_time_s", "images_per_s", "wall_s",
          "raw_eval_loss", "raw_eval_error", "raw_eval_ece")


class MetricsLog:
    """Writes one row per epoch; on resume it first drops rows past the checkpoint's epoch."""

    def __init__(self, run_dir: str | os.PathLike, keep_epochs: int = 0) -> None:
        self.csv_path = Path(run_dir) / "metrics.csv"
        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        rows = [r for r in read_metrics(run_dir) if r["epoch"] <= keep_epochs]
        self.jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(row)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (empty if it has none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
