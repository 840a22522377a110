"""Time-to-accuracy table of training runs: wall minutes until the test top-1 first reaches each target.

Reads each run directory's ``metrics.jsonl`` (``wall_s``: the run's wall clock, data decoding and
evaluation included) and prints a Markdown table.

    python benchmarks/time_to_accuracy.py runs/r20-fast-s0 runs/r20-fast-s1 --targets 85,88,90
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnets.train.metrics import read_metrics


def row(run: Path, targets: list[float]) -> list[str]:
    rows = read_metrics(run)
    if not rows:
        raise SystemExit(f"{run}: no metrics.jsonl rows")
    config = json.loads((run / "config.json").read_text())
    cells = [run.name, config["model"], config["recipe"], str(config["seed"]), str(rows[-1]["epoch"])]
    for target in targets:
        hit = next((r for r in rows if 100 * (1 - r["eval_error"]) >= target), None)
        cells.append(f"{hit['wall_s'] / 60:.1f}" if hit and "wall_s" in hit else "-")
    last = rows[-1]
    cells += [f"{100 * (1 - last['eval_error']):.2f}%",
              f"{last['wall_s'] / 60:.1f}" if "wall_s" in last else f"({sum(r['epoch_time_s'] for r in rows) / 60:.1f})"]
    return cells


def table(runs: list[Path], targets: list[float]) -> str:
    """The Markdown table: one row per run directory."""
    header = ["run", "model", "recipe", "seed", "epochs", *[f"min to {t:g}%" for t in targets], "final top-1",
              "total min"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row(run, targets)) + " |" for run in runs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of 'resnets train'")
    parser.add_argument("--targets", default="85,88,90", help="top-1 targets in percent (default: 85,88,90)")
    args = parser.parse_args()
    print(table(args.runs, [float(t) for t in args.targets.split(",")]))


if __name__ == "__main__":
    main()
