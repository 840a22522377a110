"""Run ``resnets bench`` several times in fresh processes and summarise the median speed-ups.

On a shared machine one run's ratios can be off by tens of percent; the median over runs of
each mode's (already per-round median) ratio is what the README table reports.

    python benchmarks/inference.py --repeats 3 -- --model resnet50 --batch 1,16 \
        --end-to-end ../shared/data/imagenet-samples

Writes ``benchmarks/results/<model>-run<k>.json`` per run, ``<model>-summary.json`` and
``<model>-summary.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from resnets.inference.export import atomic_path

RESULTS = Path(__file__).resolve().parent / "results"


def summarise(reports: list[dict]) -> list[dict]:
    """One row per (mode, batch): medians over runs of throughput, latencies and ratio."""
    rows: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for report in reports:
        for r in report["results"]:
            rows[(r["mode"], r["batch"])].append(r)
    out = []
    for (mode, batch), rs in rows.items():
        ratios = [r["ratio"] for r in rs if r["ratio"] is not None]
        fractions = [r["of_model_only"] for r in rs if r.get("of_model_only") is not None]
        out.append({
            "mode": mode, "batch": batch, "runs": len(rs),
            "images_per_s": statistics.median(r["images_per_s"] for r in rs),
            "latency_ms_median": statistics.median(r["latency_ms_median"] for r in rs),
            "latency_ms_p90": statistics.median(r["latency_ms_p90"] for r in rs),
            "ratio": statistics.median(ratios) if ratios else None,
            "ratios": ratios, "note": rs[-1]["note"],
            "of_model_only": statistics.median(fractions) if fractions else None, "fractions": fractions,
        })
    return out


def markdown(summary: list[dict], machine: dict, model: str, size: int) -> str:
    lines = [
        (f"{model}, {size}x{size}, on {machine['cpu']} ({machine['threads']} threads, AMX int8 "
        f"{'yes' if machine.get('amx_int8') else 'no'}), torch {machine['torch']}; median over "
        f"{max(r['runs'] for r in summary)} runs, ratio = speed-up over torchvision eager fp32 in the same run."),
        "",
        "| mode | batch | img/s | median ms | p90 ms | x torchvision eager fp32 | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        note = r["note"] + ("" if r["of_model_only"] is None else f"; {r['of_model_only']:.0%} of model-only")
        lines.append(f"| {r['mode']} | {r['batch']} | {r['images_per_s']:.1f} | {r['latency_ms_median']:.1f} | "
                     f"{r['latency_ms_p90']:.1f} | {ratio} | {note} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default=None, help="file name stem (default: the model name)")
    parser.add_argument("--no-run", action="store_true", help="only re-summarise the existing run files")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for 'resnets bench' after --")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    model = bench_args[bench_args.index("--model") + 1] if "--model" in bench_args else "resnet50"
    stem = args.name or model
    RESULTS.mkdir(parents=True, exist_ok=True)
    reports = []
    for k in range(1, args.repeats + 1):
        path = RESULTS / f"{stem}-run{k}.json"
        if not args.no_run:
            subprocess.run([sys.executable, "-m", "resnets", "bench", *bench_args, "--save", str(path)],
                           check=True)
        reports.append(json.loads(path.read_text()))
    summary = summarise(reports)
    first = reports[0]
    with atomic_path(RESULTS / f"{stem}-summary.json") as tmp:
        tmp.write_text(json.dumps({"model": first["model"], "input_size": first["input_size"],
                                   "machine": first["machine"], "summary": summary}, indent=2) + "\n")
    table = markdown(summary, first["machine"], first["model"], first["input_size"])
    with atomic_path(RESULTS / f"{stem}-summary.md") as tmp:
        tmp.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
