"""The time-to-accuracy scripts: which runs are finished, how a killed one is continued, what the table says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import recipe_table
from time_to_accuracy import table


def _run(path: Path, epochs: int, errors: list[float]) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": "resnet20", "recipe": "fast-cifar", "seed": 1,
                                                  "epochs": epochs}))
    rows = [{"epoch": i + 1, "eval_error": e, "wall_s": 60.0 * (i + 1), "epoch_time_s": 50.0}
            for i, e in enumerate(errors)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "last.pt").write_bytes(b"")
    return path


def test_a_finished_run_is_skipped_and_a_killed_one_resumed(tmp_path: Path) -> None:
    _run(tmp_path / "r20-new-s0", 3, [0.3, 0.2, 0.1])
    _run(tmp_path / "r20-new-s1", 3, [0.3])
    assert recipe_table.command("r20-new-s0", Path("DATA"), tmp_path) is None
    resumed = recipe_table.command("r20-new-s1", Path("DATA"), tmp_path)
    assert resumed[-1] == "--resume" and "--data" not in resumed
    fresh = recipe_table.command("r56-old-s1", Path("DATA"), tmp_path)
    assert fresh[fresh.index("--data") + 1] == "DATA"
    assert fresh[-6:] == ["--batch-size", "256", "--lr", "0.2", "--seed", "1"]


def test_table_gives_the_minutes_when_each_target_is_first_reached(tmp_path: Path) -> None:
    run = _run(tmp_path / "r20-new-s0", 4, [0.2, 0.13, 0.14, 0.11])
    last = table([run], [85.0, 88.0, 90.0]).splitlines()[-1]
    assert last == "| r20-new-s0 | resnet20 | fast-cifar | 1 | 4 | 2.0 | 4.0 | - | 89.00% | 4.0 |"
