"""Runs the CIFAR-10 time-to-accuracy matrix (issue 10) one run after another, then prints its table.

Each run is a plain ``resnets train`` in OUT/NAME with its own data cache (so its clock includes decoding). A run
killed half-way (a session that ended) is continued with ``--resume`` on the next call, its wall clock carried over;
a finished run is skipped. Run it alone on the machine: the table is wall-clock time.

    python benchmarks/recipe_table.py --data ../shared/data/cifar10-jpeg --out runs/table
    python benchmarks/recipe_table.py --data ../shared/data/cifar10-jpeg --out runs/table --only r20-new-s1 --dry-run
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from resnets.train.metrics import read_metrics
from time_to_accuracy import table

_NEW = ["--recipe", "fast-cifar"]  # 30 epochs of batch 128, one-cycle to lr 0.2
_OLD = ["--recipe", "fast-cifar", "--epochs", "10", "--batch-size", "256", "--lr", "0.2"]  # the recipe before it
# ResNet-56 runs at about a third of ResNet-20's speed: 12 epochs of the new recipe fit in 30 minutes.
RUNS: dict[str, list[str]] = {
    **{f"r20-new-s{s}": ["--model", "resnet20", *_NEW, "--seed", str(s)] for s in (0, 1)},
    **{f"r20-old-s{s}": ["--model", "resnet20", *_OLD, "--seed", str(s)] for s in (0, 1)},
    **{f"r56-new-s{s}": ["--model", "resnet56", *_NEW, "--epochs", "12", "--seed", str(s)] for s in (0, 1)},
    **{f"r56-old-s{s}": ["--model", "resnet56", *_OLD, "--seed", str(s)] for s in (0, 1)},
}


def finished(run: Path) -> bool:
    """Whether ``run`` holds a run that reached its configured last epoch."""
    config = run / "config.json"
    rows = read_metrics(run)
    return config.is_file() and bool(rows) and rows[-1]["epoch"] >= json.loads(config.read_text())["epochs"]


def command(name: str, data: Path, out: Path) -> list[str] | None:
    """The ``resnets train`` command that starts or continues run ``name``; None when it is finished."""
    run = out / name
    if finished(run):
        return None
    base = [sys.executable, "-m", "resnets", "train", "--out", str(run), "--cache-dir", str(out / f".cache-{name}")]
    if (run / "last.pt").is_file():
        return [*base, "--resume"]
    return [*base, "--data", str(data), *RUNS[name]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder (train.tar and test.tar)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the run directories")
    parser.add_argument("--only", nargs="+", choices=list(RUNS), help="these runs (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    for name in args.only or RUNS:
        cmd = command(name, args.data, args.out)
        if cmd is None:
            continue
        print(" ".join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)
            shutil.rmtree(args.out / f".cache-{name}", ignore_errors=True)
    done = [args.out / name for name in args.only or RUNS if finished(args.out / name)]
    if done:
        print(table(done, [85.0, 88.0, 90.0]))


if __name__ == "__main__":
    main()
