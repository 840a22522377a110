"""Recipes at equal wall-clock budgets on real CIFAR-10 JPEGs: today's fast-cifar against cifar-modern, and
distillation against the same student recipe without a teacher (issue 31, proofs 4a and 4b).

Each run is sized to its budget: a short probe of the same recipe and model (two epochs on a subset, the full
test set) measures the training speed and the per-epoch evaluation and start-up costs, and the run gets as many
epochs as fit, so its whole schedule (warm-up and decay) ends inside the budget. A shared host's speed drifts
within minutes, so the run re-plans its length from its own epochs at a fifth and at half of its plan (the
median epoch's wall clock, evaluation and checkpoint included): it stops there (``on_epoch_end``) and resumes with
the new length, the learning-rate schedule recomputed from where it is, as timm's ``--resume`` does (the plans
are in the results). The run's own wall clock (``wall_s``: decoding into its own cache, evaluation, checkpoints
and the restarts included) is recorded beside it. A run left unfinished (a session that ended) continues on the
next call. Run it alone on the machine.

    python benchmarks/train_recipes.py recipes --data ../shared/data/cifar10-jpeg --models resnet20,resnet56 \\
        --budgets 30,60 --seeds 0,1 --save benchmarks/results/train-recipes.json
    python benchmarks/train_recipes.py distill --data ../shared/data/cifar10-jpeg --teacher-model resnet56 \\
        --teacher-budget 60 --budgets 30 --seeds 0,1 --save benchmarks/results/train-distill.json
    python benchmarks/train_recipes.py recipes --data ../shared/data/cifar10-jpeg --smoke   # a minute or two

``--set KEY=VALUE`` overrides an option of the new recipe (or of both distillation arms) for trying variants.
``--epochs N`` gives every run N epochs instead of a wall-clock budget (no probe, no re-plans): arms compared at an
equal number of training steps, each run's wall clock still recorded (distillation at an equal student budget in
steps, the teacher's forward passes outside it).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

import resnets
from resnets.atomic import atomic_path
from resnets.cpu import cpu_info
from resnets.train.metrics import read_metrics

PROBE_IMAGES = 2560  # training images of the sizing probe (20 steps of 128)


def probe(options: dict[str, Any], out: Path, train_images: int, test_images: int) -> dict[str, float]:
    """Seconds per training image, per evaluation pass and of start-up (decoding the whole set included), from two
    short epochs of ``options`` with their own fresh data cache."""
    run = out / "probe"
    shutil.rmtree(run, ignore_errors=True)
    resnets.train(**{**options, "epochs": 2, "train_subset": PROBE_IMAGES, "out": str(run), "progress": False,
                     "cache_dir": options.get("cache_dir") or str(run / "cache")})
    rows = read_metrics(run)
    per_image = 1 / rows[1]["images_per_s"]
    epoch_wall = rows[1]["wall_s"] - rows[0]["wall_s"]
    startup = max(0.0, rows[0]["wall_s"] - epoch_wall) * (train_images + test_images) / (PROBE_IMAGES + test_images)
    shutil.rmtree(run)
    return {"per_image_s": per_image, "eval_s": max(0.0, epoch_wall - PROBE_IMAGES * per_image), "startup_s": startup}


def fitted_epochs(costs: dict[str, float], train_images: int, budget_s: float) -> int:
    """Whole epochs of ``train_images`` that fit ``budget_s`` after start-up, each with its evaluation."""
    per_epoch = train_images * costs["per_image_s"] + costs["eval_s"]
    return max(1, math.floor((budget_s - costs["startup_s"]) / per_epoch))


def replan_epochs(planned: int) -> list[int]:
    """The epochs after which a run of ``planned`` epochs re-plans its length: a fifth and half of the way (two
    epochs at least, so that one epoch without the start-up is measured), before its last epoch."""
    return sorted({c for c in (max(2, round(planned / 5)), max(2, round(planned / 2))) if c < planned})


def replanned(rows: list[dict[str, Any]], budget_s: float) -> int:
    """The run's length from its own epochs so far: those done and as many more as fit what is left of
    ``budget_s`` at the median epoch's wall clock (the first excluded: it holds the start-up), one at least."""
    walls = [b["wall_s"] - a["wall_s"] for a, b in zip(rows, rows[1:])]
    per_epoch = statistics.median(walls)
    return rows[-1]["epoch"] + max(1, math.floor((budget_s - rows[-1]["wall_s"]) / per_epoch))


def sized_run(options: dict[str, Any], budget_min: float | None, images: tuple[int, int], out: Path,
              epochs: int | None = None) -> dict[str, Any]:
    """One run of ``options`` sized to ``budget_min`` minutes (or of ``epochs`` epochs), its clock counting its own
    data decoding: its epochs, wall clock and top-1 (last and best). A run left unfinished (a session that ended) is
    resumed with its epochs, a finished one read back."""
    budget = f"{epochs}ep" if epochs else f"{budget_min:g}m"
    run = out / (f"{options['model']}-{options['recipe']}-{budget}-s{options['seed']}"
                 + ("-teacher" if options.get("teacher") else ""))
    options = {**options, "out": str(run), "progress": False, "cache_dir": options.get("cache_dir") or str(run / "cache")}
    saved = run / "run.json"
    if saved.is_file():
        sizing = json.loads(saved.read_text())
    else:
        shutil.rmtree(run, ignore_errors=True)
        if epochs:
            sizing = {"epochs": epochs}
        else:
            costs = probe(options, out, *images)
            sizing = {"probe": costs, "epochs": fitted_epochs(costs, images[0], budget_min * 60)}
        run.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(sizing))
    rows = read_metrics(run)
    while not rows or rows[-1]["epoch"] < sizing["epochs"]:
        done = rows[-1]["epoch"] if rows else 0
        check = None if epochs else next((c for c in replan_epochs(sizing["epochs"]) if c > done), None)
        resnets.train(**options, epochs=sizing["epochs"], resume=(run / "last.pt").is_file(),
                      on_epoch_end=lambda row: row["epoch"] == check)
        rows = read_metrics(run)
        if rows[-1]["epoch"] == check:
            sizing["epochs"] = replanned(rows, budget_min * 60)
            sizing.setdefault("plans", []).append({"after_epoch": check, "epochs": sizing["epochs"],
                                                   "wall_s": rows[-1]["wall_s"]})
            saved.write_text(json.dumps(sizing))
    last = rows[-1]
    return {
        "model": options["model"], "recipe": options["recipe"], "seed": options["seed"], "budget": budget,
        "teacher": options.get("teacher"), "overrides": {k: v for k, v in options.items() if k not in BASE_KEYS},
        **sizing, "wall_s": last["wall_s"], "top1": round(100 * (1 - last["eval_error"]), 2),
        "best_top1": round(100 * (1 - min(r["eval_error"] for r in rows)), 2), "run_dir": str(run),
    }


BASE_KEYS = {"model", "data", "recipe", "seed", "teacher", "train_subset", "test_subset", "cache_dir", "out",
             "progress"}


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` overrides, the values read as JSON where they parse (numbers, true/false, null)."""
    values = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            values[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            values[key.replace("-", "_")] = value
    return values


def summary(runs: list[dict[str, Any]], arm: str) -> list[dict[str, Any]]:
    """Mean and per-seed top-1 of each (model, budget, ``arm``) group."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["budget"], r[arm] or "none"), []).append(r)
    return [{"model": m, "budget": b, arm: a, "top1": [r["top1"] for r in rs],
             "mean_top1": round(statistics.mean(r["top1"] for r in rs), 2),
             "wall_min": [round(r["wall_s"] / 60, 1) for r in rs]} for (m, b, a), rs in groups.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("proof", choices=("recipes", "distill"))
    p.add_argument("--data", required=True, help="CIFAR-10 (the JPEG folder of train.tar/test.tar)")
    p.add_argument("--models", default="resnet20,resnet56", help="recipes: the networks (default: resnet20,resnet56)")
    p.add_argument("--recipes", default="fast-cifar,cifar-modern", help="recipes: the two compared")
    p.add_argument("--budgets", default="30,60", help="wall-clock minutes per run (default: 30,60)")
    p.add_argument("--epochs", type=int,
                   help="every run this many epochs instead of a wall-clock budget (arms at equal steps)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--student", default="resnet20", help="distill: the student network (default: resnet20)")
    p.add_argument("--student-recipe", default="cifar-modern", help="distill: the recipe of both arms")
    p.add_argument("--teacher", help="distill: the teacher's weights (default: train one first)")
    p.add_argument("--teacher-model", default="resnet56", help="distill: the network of a teacher trained here")
    p.add_argument("--teacher-budget", type=float, default=60, help="distill: minutes for the teacher (default: 60)")
    p.add_argument("--taught-only", action="store_true",
                   help="distill: only the taught arm (the untaught one already run, e.g. by the recipes proof)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the new recipe (recipes) or of both arms (distill), e.g. --set random_erase=0.25")
    p.add_argument("--out", default="runs/proof", help="run directories (default: runs/proof)")
    p.add_argument("--cache-dir", help="decoded data cache (default: each run its own, so its clock counts decoding)")
    p.add_argument("--save", help="the JSON results file (default: print only)")
    p.add_argument("--smoke", action="store_true",
                   help="a quick check of the script (a minute or two): one model and seed, 15-second runs on 1280 "
                        "training and 500 test images, in OUT/smoke")
    args = p.parse_args()
    out = Path(args.out)
    budgets: list[float | None] = [None] if args.epochs else [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    common: dict[str, Any] = {"data": args.data, "cache_dir": args.cache_dir}
    images = (50_000, 10_000)  # CIFAR-10's training and test images
    if args.smoke:
        budgets, seeds, images, out = [0.25], seeds[:1], (1280, 500), out / "smoke"
        common |= {"train_subset": images[0], "test_subset": images[1]}
    extra = parse_sets(args.set)
    runs: list[dict[str, Any]] = []
    if args.proof == "recipes":
        new = args.recipes.split(",")[-1]
        for model in args.models.split(",")[: 1 if args.smoke else None]:
            for budget in budgets:
                for seed in seeds:
                    for recipe in args.recipes.split(","):
                        options = {**common, "model": model, "recipe": recipe, "seed": seed,
                                   **(extra if recipe == new else {})}
                        runs.append(sized_run(options, budget, images, out, args.epochs))
                        print(json.dumps(runs[-1]), flush=True)
        results = {"summary": summary(runs, "recipe")}
    else:
        teacher = args.teacher
        if teacher is None:  # trained here first, on the student's recipe, outside the student budget
            options = {**common, "model": args.teacher_model, "recipe": args.student_recipe, "seed": 0}
            trained = sized_run(options, 0.25 if args.smoke else args.teacher_budget, images, out)
            runs.append(trained)
            teacher = str(Path(trained["run_dir"]) / "model.safetensors")
            print(json.dumps(trained), flush=True)
        for budget in budgets:
            for seed in seeds:
                for with_teacher in (True,) if args.taught_only else (False, True):
                    options = {**common, "model": args.student, "recipe": args.student_recipe, "seed": seed, **extra,
                               **({"teacher": teacher} if with_teacher else {})}
                    runs.append(sized_run(options, budget, images, out, args.epochs))
                    print(json.dumps(runs[-1]), flush=True)
        students = [r for r in runs if r["model"] == args.student]
        results = {"teacher": teacher, "summary": summary(students, "teacher")}
    document = {"proof": args.proof, "command": " ".join(sys.argv), "machine": cpu_info().describe(),
                "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
                "smoke": args.smoke, **results, "runs": runs}
    print(json.dumps(results, indent=2))
    if args.save:
        with atomic_path(Path(args.save)) as tmp:
            Path(tmp).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
