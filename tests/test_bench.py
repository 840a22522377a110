"""Benchmark helpers: statistics against numpy, interleaving, and a small end-to-end ``resnets bench`` run."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from resnets.cli import main
from resnets.inference.bench import interleaved_times, percentile


def test_percentile_matches_numpy() -> None:
    values = list(np.random.default_rng(0).random(37))
    for q in (0.0, 0.5, 0.9, 1.0):
        assert percentile(values, q) == pytest.approx(np.percentile(values, 100 * q))


def test_rounds_interleave_and_time_each_call() -> None:
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), time.sleep(0.01))}
    times = interleaved_times(fns, runs=3, warmup=1)
    assert calls[:2] == ["a", "b"]
    assert calls[2:] == ["a", "b"] * 3  # after one warm-up call each, strictly alternating rounds
    assert len(times["a"]) == len(times["b"]) == 3
    assert min(times["b"]) >= 0.01 > max(times["a"])


@pytest.mark.slow
def test_cli_bench_json_with_end_to_end(tmp_path, capsys) -> None:
    pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    for i in range(8):  # JPEGs of different sizes and modes, as real folders have
        size = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).convert("L" if i == 3 else "RGB") \
            .save(tmp_path / f"{i}.jpg")
    saved = tmp_path / "out" / "bench.json"
    code = main(["bench", "--model", "resnet18", "--weights", "none", "--batch", "1,2", "--precision", "fp32,bf16", "--no-compile",
                 "--input-size", "32", "--runs", "3", "--end-to-end", str(tmp_path), "--workers", "0", "--json",
                 "--save", str(saved)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(saved.read_text())
    modes = [(r["mode"], r["batch"]) for r in report["results"]]
    assert modes == [
        ("torchvision eager fp32", 1), ("resnets fp32", 1), ("resnets bf16", 1),
        ("torchvision eager fp32", 2), ("resnets fp32", 2), ("resnets bf16", 2),
        ("end-to-end fp32", 2), ("end-to-end bf16", 2),
    ]
    base = report["results"][0]
    assert base["ratio"] == 1.0 and base["images_per_s"] == pytest.approx(1e3 / base["latency_ms_median"])
    assert all(r["images_per_s"] > 0 and r["latency_ms_p90"] >= r["latency_ms_median"] * 0.999
               for r in report["results"])
    # 8 images read 6 times for at least 20 timed batches: 24 batches of 2, the first untimed.
    assert "46 images" in report["results"][-1]["note"] and "(6 passes)" in report["results"][-1]["note"]
    assert all(r["of_model_only"] > 0 for r in report["results"][-2:])
