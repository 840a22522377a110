"""Load test of ``resnets serve`` through both APIs: 32 concurrent clients for 60 s on /v1/predict, then on the Open
Inference Protocol's /v2/models/NAME/infer (the body ``tritonclient.http`` builds: the JSON header and the JPEG as
binary BYTES data, the top 5 classes asked for as Triton's classification strings).

The server is ``resnets serve`` itself, in a subprocess (its options after ``--``; by default ResNet-50 with random
weights, int8, calibrated on the photos), the clients asyncio connections in this process, each posting the photos
of ``--images`` one request after another over a keep-alive connection, on 127.0.0.1 only. Reported per API:
requests/s, p50/p90/p99 latency, failed requests (anything but 200, or a broken connection), and the server's
resident memory (its process and every process it started, VmRSS: with ``--engine ray``, the whole local Ray
cluster) at start and after each API's load.

    python benchmarks/serve_oip.py --seconds 60 --out benchmarks/results/serve-oip.json
    python benchmarks/serve_oip.py --seconds 60 --out benchmarks/results/serve-oip-ray.json -- \
        --model resnet50 --weights none --precision int8 --calibration PHOTOS --engine ray --replicas 2
    python benchmarks/serve_oip.py --seconds 5            # a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from http_clients import client

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-samples"


# --- the clients ---------------------------------------------------------------------------------------------

async def load(port: int, requests: list[bytes], clients: int, seconds: float) -> dict:
    """``clients`` concurrent clients for ``seconds``: requests/s, latency percentiles, failures."""
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(*(client(port, requests, i, clients, start + seconds, latencies, errors)
                           for i in range(clients)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [float("nan")] * 99
    return {"clients": clients, "seconds": round(elapsed, 3), "ok": len(latencies), "failed": len(errors),
            "first_failures": errors[:5], "req_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * q[49], "p90_ms": 1000 * q[89], "p99_ms": 1000 * q[98]}


def v1_request(image: bytes, model: str) -> bytes:
    return (f"POST /v1/predict?top=5&model={model} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(image)}\r\n\r\n").encode() + image


def v2_request(image: bytes, model: str) -> bytes:
    """The request ``tritonclient.http`` sends for one JPEG (BYTES, binary) and the top 5 classes."""
    import numpy as np
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    given = InferInput("image", [1], "BYTES")
    given.set_data_from_numpy(np.array([image], dtype=object))
    body, json_size = InferenceServerClient.generate_request_body(
        [given], outputs=[InferRequestedOutput("probabilities", class_count=5)])
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {json_size}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


# --- the server ----------------------------------------------------------------------------------------------

def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` and its descendants (Linux /proc), in MiB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, options: list[str], timeout: float) -> tuple[subprocess.Popen, dict]:
    """``resnets serve OPTIONS`` on ``port``, once /readyz answers 200 (and what it says)."""
    import http.client

    command = [sys.executable, "-m", "resnets", "serve", "--port", str(port), "--log-level", "warning", *options]
    print("starting:", " ".join(command[1:]), flush=True)
    proc = subprocess.Popen(command)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"resnets serve exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            answer = conn.getresponse()
            if answer.status == 200:
                return proc, json.loads(answer.read())
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"resnets serve was not ready within {timeout:g} s")
        time.sleep(0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Options after -- go to resnets serve.")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help=f"photos to post (default: {DEFAULT_IMAGES})")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default: 32)")
    p.add_argument("--seconds", type=float, default=60.0, help="load per API (default: 60)")
    p.add_argument("--apis", default="v1,v2", help="which APIs, in order (default: v1,v2)")
    p.add_argument("--ready-timeout", type=float, default=900, help="seconds to wait for the server (default: 900)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    from resnets.data.images import find_images

    paths = find_images(args.images)
    if not paths:
        raise SystemExit(f"no images in {args.images}")
    images = [path.read_bytes() for path in paths]
    options = argv[split + 1:] or ["--model", "resnet50", "--weights", "none", "--precision", "int8",
                                   "--calibration", str(args.images)]
    options = ["--max-queue", str(4 * args.clients), *options]  # room for every client: a failure is a real one
    port = free_port()
    started = time.perf_counter()
    proc, ready = start_server(port, options, args.ready_timeout)
    try:
        model = next(iter(ready["models"]))
        print(f"ready in {time.perf_counter() - started:.0f} s: {model} ({ready['precision']} on {ready['backend']})",
              flush=True)
        report = {"server": options, "model": model, "ready": ready, "rss_mib": {"start": rss_mib(proc.pid)},
                  "apis": {}}
        build = {"v1": v1_request, "v2": v2_request}
        for api in args.apis.split(","):
            requests = [build[api](image, model) for image in images]
            level = asyncio.run(load(port, requests, args.clients, args.seconds))
            level["rss_mib_after"] = report["rss_mib"][f"after_{api}"] = rss_mib(proc.pid)
            report["apis"][api] = level
            print(f"{api}: {level['req_per_s']:7.1f} req/s  p50 {level['p50_ms']:7.1f}  p90 {level['p90_ms']:7.1f}  "
                  f"p99 {level['p99_ms']:7.1f} ms  failed {level['failed']}  RSS {level['rss_mib_after']:.0f} MiB",
                  flush=True)
            for failure in level["first_failures"]:
                print("   ", failure)
    finally:
        proc.terminate()
        proc.wait(60)
    report.update(clients=args.clients, seconds=args.seconds, cpus=os.cpu_count(),
                  load_average=os.getloadavg())
    print(json.dumps({k: report[k] for k in ("rss_mib", "load_average")}))
    if args.out:
        from resnets.atomic import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
