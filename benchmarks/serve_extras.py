"""``resnets serve``'s /v1/features and /v1/explain: on the eager fp32 network (before; ``--eager-extras`` now) against
the served model's own precision and backend (after, the default), in one run.

Two servers of the same optimised model run in this process, one with ``eager_extras=True``; for each endpoint
and round, ``--clients`` concurrent clients (a subprocess, ``serve_load.py``'s client) post the photos to the
eager-extras server, then to the default one, for ``--seconds`` each.  The speed-up is the median of the per-round
ratios of requests per second, so load from other processes hits both sides alike.  /v1/predict runs the same
model on both servers: its ratio is the control (how far apart two identical servers measure).

    python benchmarks/serve_extras.py --precision int8 --seconds 20 --rounds 2 \\
        --out benchmarks/results/serve-extras-int8.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from serve_load import DEFAULT_IMAGES, run_clients

ENDPOINTS = {"predict": "/v1/predict", "features": "/v1/features", "explain": "/v1/explain?method=gradcam"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="int8")
    p.add_argument("--backend", default="auto", help="the served model's backend (default: auto)")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-requests", type=int, default=20000)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    import torch

    from resnets.cpu import cpu_info
    from resnets.data.images import find_images
    from resnets.pipeline import load_inference
    from resnets.serve import ServeConfig, background_server, create_app

    paths = find_images(args.images)
    inf = load_inference(args.model, None, args.precision, device="cpu", backend=args.backend,
                         calibration=paths if args.precision == "int8" else None)
    print(f"serving {inf.describe()}", flush=True)
    config = dict(max_batch=args.max_batch, max_queue=4 * args.clients + args.max_batch, precision=args.precision)
    apps = {"eager fp32 (before)": create_app(inf, ServeConfig(**config, eager_extras=True)),
            f"{inf.precision} on {inf.backend} (after)": create_app(inf, ServeConfig(**config))}
    rows = []
    with background_server(next(iter(apps.values()))) as before, background_server(list(apps.values())[1]) as after:
        ports = dict(zip(apps, (before, after)))
        for name, port in ports.items():  # builds each server's stage map before timing
            start = time.perf_counter()
            for path in ENDPOINTS.values():
                run_clients(port, 1, argparse.Namespace(**{**vars(args), "seconds": 0.1, "max_requests": 1}), path)
            print(f"{name}: first requests {time.perf_counter() - start:.1f} s", flush=True)
        for r in range(args.rounds):
            for endpoint, path in ENDPOINTS.items():
                rates = {name: run_clients(port, args.clients, args, path) for name, port in ports.items()}
                before_rate, after_rate = (rates[n]["req_per_s"] for n in apps)
                errors = sum(level["errors"] for level in rates.values())
                rows.append({"round": r + 1, "endpoint": endpoint, "before_req_per_s": before_rate,
                             "after_req_per_s": after_rate, "ratio": after_rate / before_rate, "errors": errors})
                print(f"round {r + 1} {endpoint}: before {before_rate:.1f} req/s, after {after_rate:.1f} req/s "
                      f"({after_rate / before_rate:.2f}x), {errors} errors", flush=True)
    summary = {"cpu": cpu_info().describe(), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "served": inf.describe(), "clients": args.clients, "seconds": args.seconds,
               **{f"median_ratio_{e}": statistics.median(r["ratio"] for r in rows if r["endpoint"] == e)
                  for e in ENDPOINTS},
               "rounds": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
