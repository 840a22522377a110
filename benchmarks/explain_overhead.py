"""What an explanation costs: ``resnets.explain`` vs a plain forward pass (``model.predict``) on one batch.

Both run in this one process on the same model and batch, interleaved round by round so that load
from other processes hits both alike; the ratios of the medians and of the fastest rounds are reported
per method and layer.

    python benchmarks/explain_overhead.py [--model resnet50] [--batch 16] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import resnets
from resnets.explain import explain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = resnets.create_model(args.model).eval().to(args.device)  # random weights: the cost is the same
    size = model.input_size[-1]
    x = torch.randn(args.batch, 3, size, size, device=args.device)
    last = len(model.stage_names)
    runs = {
        "predict": lambda: model.predict(x, batch_size=args.batch),
        "cam": lambda: explain(model, x, method="cam"),
        "gradcam": lambda: explain(model, x, method="gradcam"),
        "gradcam++": lambda: explain(model, x, method="gradcam++"),
        "gradcam layer 1": lambda: explain(model, x, method="gradcam", layer=1),
    }
    for run in runs.values():  # warm-up: allocator, oneDNN kernels
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    base, fastest = statistics.median(times["predict"]), min(times["predict"])
    print(f"{args.model}, batch {args.batch} at {size}x{size}, {args.device}, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds (layer = last stage, {last}, unless named); on a shared machine the "
          "fastest round is the least disturbed")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:16s} median {med * 1000:7.1f} ms = {med / base:4.2f}x predict   "
              f"fastest {min(ts) * 1000:7.1f} ms = {min(ts) / fastest:4.2f}x predict")


if __name__ == "__main__":
    main()
