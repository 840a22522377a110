"""Where the time goes: torch.profiler's op table for ``resnets.optimize`` at each precision.

    python benchmarks/profile_inference.py --model resnet50 --batch 16 > benchmarks/results/resnet50-profile.txt
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import resnets
from resnets.inference import PRECISIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    model = resnets.create_model(args.model).eval()
    x = torch.randn(args.batch, *model.input_size)
    for precision in args.precision:
        fast = resnets.optimize(model, precision, example_inputs=x, calibration=[x], backend="torch")
        for _ in range(2):
            fast(x)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.iters):
                fast(x)
        per_call = (time.perf_counter() - start) / args.iters
        print(f"== {args.model} {precision} batch {args.batch}: {1e3 * per_call:.1f} ms per call under the profiler "
              f"({args.batch / per_call:.1f} img/s), {torch.get_num_threads()} threads")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
