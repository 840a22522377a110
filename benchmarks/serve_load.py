"""Load test of ``resnets serve``: concurrent clients against the batching server, a naive one, and the model alone.

For each concurrency level, N clients (each a keep-alive connection, one request at a time) post the
photos of DIR to ``/v1/predict`` for ``--seconds`` (at most ``--max-requests``), on 127.0.0.1 only.
Measured in one run, so that load from other processes falls on every figure alike:

* the service as ``resnets serve`` runs it: the optimised model (``--precision``), dynamic batching;
* a naive server: one request = one eager fp32 call (the same service with ``max_batch=1``);
* the model alone: the same optimised model object at batch 16 on preprocessed photos, timed with
  both servers idle.

Interleaved, level by level (model alone, batching server, naive server, ..., model alone), and
``--rounds`` times over, so that every ratio compares figures measured minutes apart at most. The
servers run in this process (uvicorn in threads, each model in its batcher's thread), the clients
in a subprocess, so client work does not hold this process's GIL.

    python benchmarks/serve_load.py --precision int8 --seconds 20 --rounds 2 \
        --out benchmarks/results/serve-load-int8.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from http_clients import client

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-samples"


# --- the clients (run as a subprocess: python serve_load.py --client ...; each one is http_clients.client) -----

async def _load(port: int, images: list[bytes], clients: int, seconds: float, max_requests: int,
                path: str = "/v1/predict?top=5") -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]
    start = time.perf_counter()
    requests = [f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode() + data for data in images]
    await asyncio.gather(*(client(port, requests, i, clients, start + seconds, latencies, errors, budget)
                           for i in range(clients)))
    elapsed = time.perf_counter() - start  # the last in-flight answers included
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [float("nan")] * 99
    return {"clients": clients, "seconds": round(elapsed, 3), "ok": len(latencies), "errors": len(errors),
            "first_errors": errors[:5], "req_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * q[49], "p90_ms": 1000 * q[89], "p99_ms": 1000 * q[98]}


def client_main(args: argparse.Namespace) -> None:
    from resnets.data.images import find_images

    images = [p.read_bytes() for p in find_images(args.images)]
    print(json.dumps(asyncio.run(_load(args.client, images, args.clients, args.seconds, args.max_requests,
                                       args.path))))


# --- the servers and the model alone -------------------------------------------------------------------

def run_clients(port: int, clients: int, args: argparse.Namespace, path: str = "/v1/predict?top=5") -> dict:
    """``clients`` concurrent clients posting the photos to ``path`` for ``args.seconds``, from a subprocess."""
    command = [sys.executable, __file__, "--client", str(port), "--clients", str(clients), "--seconds",
               str(args.seconds), "--max-requests", str(args.max_requests), "--images", str(args.images),
               "--path", path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 120, check=True)
    return json.loads(done.stdout)


def model_only(model, batch, seconds: float) -> dict:
    """Images/s of ``model`` alone on ``batch`` for about ``seconds`` (at least 3 calls)."""
    from resnets.pipeline import run_model

    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        run_model(model, batch)
        calls += 1
    elapsed = time.perf_counter() - start
    return {"batch": len(batch), "calls": calls, "images_per_s": len(batch) * calls / elapsed}


def load_level(port: int, metrics, clients: int, args: argparse.Namespace) -> dict:
    """One level's client figures, and the server's mean batch size over it."""
    calls, images = metrics.batch_size.count, metrics.batch_size.sum
    level = run_clients(port, clients, args)
    calls, images = metrics.batch_size.count - calls, metrics.batch_size.sum - images
    level["mean_batch"] = images / calls if calls else 0.0
    print(f"  {clients:3d} clients: {level['req_per_s']:7.1f} req/s  p50 {level['p50_ms']:7.1f}  "
          f"p90 {level['p90_ms']:7.1f}  p99 {level['p99_ms']:7.1f} ms  errors {level['errors']}  "
          f"mean batch {level['mean_batch']:.2f}", flush=True)
    return level


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--weights", default=None, help="weights (default: random; speed does not depend on them)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="int8")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="torch")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help=f"photos to post (default: {DEFAULT_IMAGES})")
    p.add_argument("--levels", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=20.0, help="load per level and server (default: 20)")
    p.add_argument("--rounds", type=int, default=1, help="times to repeat all levels (default: 1)")
    p.add_argument("--max-requests", type=int, default=20000, help="cap on requests per level (default: 20000)")
    p.add_argument("--model-seconds", type=float, default=5.0, help="model-alone timing per point (default: 5)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=2, help="decode threads of the server (default: 2)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--client", type=int, default=None, help=argparse.SUPPRESS)  # internal: be the client
    p.add_argument("--clients", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--path", default="/v1/predict?top=5", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client is not None:
        return client_main(args)

    import torch

    from resnets.atomic import atomic_path
    from resnets.data.images import find_images
    from resnets.data.batches import file_batches
    from resnets.pipeline import load_inference
    from resnets.serve import ServeConfig, background_server, create_app

    paths = find_images(args.images)
    if not paths:
        raise SystemExit(f"no images in {args.images}")
    max_queue = 2 * max(args.levels) + args.max_batch  # room for every client: errors would be the queue's
    print(f"loading {args.model} {args.precision} ({args.backend}) and eager fp32; the first compiles at start-up",
          flush=True)
    started = time.perf_counter()
    inf = load_inference(args.model, args.weights, args.precision, device="cpu", backend=args.backend,
                         calibration=paths if args.precision == "int8" else None)
    first = (paths * args.max_batch)[:args.max_batch]  # a full batch even from fewer photos
    batch = next(b for b, _ in file_batches(first, inf.preprocessing, args.max_batch, workers=0)).images
    served_app = create_app(inf, ServeConfig(max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                                             max_queue=max_queue, workers=args.workers, precision=args.precision,
                                             backend=args.backend))
    eager = load_inference(args.model, args.weights, "fp32", device="cpu")
    naive_app = create_app(eager, ServeConfig(max_batch=1, max_delay_ms=0, max_queue=max_queue, workers=args.workers))
    served, naive, alone, rounds = [], [], [], []
    with background_server(served_app) as served_port, background_server(naive_app) as naive_port:
        print(f"ready in {time.perf_counter() - started:.0f} s", flush=True)

        def model_alone() -> float:
            alone.append(model_only(inf.model, batch, args.model_seconds))
            print(f"  model alone, batch {len(batch)}: {alone[-1]['images_per_s']:.1f} img/s", flush=True)
            return alone[-1]["images_per_s"]

        for r in range(args.rounds):  # each level: the model alone, the batching server, the naive one
            print(f"round {r + 1}: batching server ({args.precision}, max batch {args.max_batch}, "
                  f"{args.max_delay_ms:g} ms), then the naive one (one request = one eager fp32 call)", flush=True)
            before = model_alone()
            for clients in args.levels:
                served.append({"round": r + 1, **load_level(served_port, served_app.state.metrics, clients, args)})
                naive.append({"round": r + 1, **load_level(naive_port, naive_app.state.metrics, clients, args)})
                after = model_alone()
                if clients == args.levels[-1]:
                    model = statistics.fmean((before, after))
                    rounds.append({"round": r + 1, "clients": clients, "served_req_per_s": served[-1]["req_per_s"],
                                   "model_only_images_per_s": model,
                                   "of_model_only": served[-1]["req_per_s"] / model,
                                   "naive_req_per_s": naive[-1]["req_per_s"],
                                   "x_naive": served[-1]["req_per_s"] / naive[-1]["req_per_s"]})
                before = after
    summary = {"rounds": rounds,
               "median_of_model_only": statistics.median(r["of_model_only"] for r in rounds),
               "median_x_naive": statistics.median(r["x_naive"] for r in rounds),
               "failed_requests": sum(level["errors"] for level in served + naive)}
    print(json.dumps(summary, indent=1))
    if args.out:
        report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                           if k not in ("client", "clients")},
                  "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "served": served, "naive": naive, "model_only": alone, "summary": summary}
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
