"""benchmarks/train_recipes.py's sizing: how many epochs a budget holds, when a run re-plans, a fixed-epochs run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import train_recipes


def _rows(walls: list[float]) -> list[dict[str, Any]]:
    return [{"epoch": i + 1, "wall_s": w, "eval_error": 0.5 - 0.01 * i} for i, w in enumerate(walls)]


def test_fitted_epochs_counts_whole_epochs_after_the_start_up() -> None:
    costs = {"per_image_s": 0.002, "eval_s": 20.0, "startup_s": 60.0}  # 50,000 images: 100 s + 20 s an epoch
    assert train_recipes.fitted_epochs(costs, 50_000, 1800.0) == 14  # (1800 - 60) / 120 = 14.5
    assert train_recipes.fitted_epochs(costs, 50_000, 100.0) == 1  # one epoch at least


def test_replans_at_a_fifth_and_half_of_the_plan_never_at_its_end() -> None:
    assert train_recipes.replan_epochs(20) == [4, 10]
    assert train_recipes.replan_epochs(10) == [2, 5]
    assert train_recipes.replan_epochs(3) == [2]
    assert train_recipes.replan_epochs(2) == []


def test_replanned_fits_the_rest_of_the_budget_at_the_median_epoch() -> None:
    # epoch walls after the first: 100, 110, 400 (a stall): median 110; 1800 - 520 = 1280 s left, 11 more epochs
    assert train_recipes.replanned(_rows([200.0, 300.0, 410.0, 520.0]), 1800.0) == 4 + 11
    assert train_recipes.replanned(_rows([200.0, 300.0, 1900.0]), 1800.0) == 3 + 1  # over budget: one more


def test_a_fixed_epochs_run_neither_probes_nor_replans_and_resumes_where_it_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def train(**options: Any) -> None:  # writes one metrics row per epoch, stopping when on_epoch_end says so
        calls.append(options)
        run = Path(options["out"])
        done = len(train_recipes.read_metrics(run))
        for epoch in range(done + 1, options["epochs"] + 1):
            row = {"epoch": epoch, "wall_s": 100.0 * epoch, "eval_error": 0.2}
            with open(run / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            (run / "last.pt").write_bytes(b"")
            if options["on_epoch_end"](row):
                return

    monkeypatch.setattr(train_recipes, "probe", lambda *a: pytest.fail("a fixed-epochs run must not probe"))
    monkeypatch.setattr(train_recipes.resnets, "train", train)
    options = {"model": "resnet20", "recipe": "cifar-modern", "seed": 1, "data": "DATA", "teacher": "T"}
    run = tmp_path / "resnet20-cifar-modern-6ep-s1-teacher"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"epochs": 6}))
    train(**options, out=str(run), epochs=6, on_epoch_end=lambda row: row["epoch"] == 2)  # killed after epoch 2

    result = train_recipes.sized_run(options, None, (50_000, 10_000), tmp_path, epochs=6)
    assert [r["epoch"] for r in train_recipes.read_metrics(run)] == [1, 2, 3, 4, 5, 6]
    assert calls[-1]["resume"] is True and calls[-1]["epochs"] == 6 and len(calls) == 2  # one resumed call
    assert result["budget"] == "6ep" and result["epochs"] == 6 and "plans" not in result
    assert result["top1"] == 80.0 and result["wall_s"] == 600.0
