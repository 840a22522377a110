"""A compiled model after it has seen a second batch size: torch.compile's automatic dynamic shapes (one
dynamic-shape graph for every size, as ``optimize`` compiled before) against one static graph per size
(``dynamic=False``, what ``optimize`` compiles now).

Both models are compiled in this one process from the same folded network, each first called at
``--first`` and then at ``--second``; then both are timed at ``--first`` interleaved round by round, as
ratios to the static model's time, so that load from other processes hits both alike.

    python benchmarks/compiled_batch_sizes.py [--model resnet50] [--precision fp32] [--first 16] [--second 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import resnets
from resnets.inference import bench
from resnets.inference.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--first", type=int, default=16)
    parser.add_argument("--second", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnets.create_model(args.model).eval()
    size = model.input_size[-1]
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32

    def batch(n: int) -> torch.Tensor:
        return torch.randn(n, 3, size, size).to(dtype).contiguous(memory_format=torch.channels_last)

    from torch._inductor import config as inductor_config

    nets = {}
    for name, dynamic in (("automatic dynamic (before)", None), ("static per size (now)", False)):
        net = torch.compile(prepare(model, args.precision, batch(2), [batch(4)]), dynamic=dynamic)
        with torch.inference_mode(), inductor_config.patch(freezing=True):
            for n in (args.first, args.second):
                start = time.perf_counter()
                net(batch(n))
                print(f"{name}: first call at batch {n}: {time.perf_counter() - start:.1f} s", flush=True)
        nets[name] = net
    x = batch(args.first)
    times = {name: [] for name in nets}
    with torch.inference_mode(), inductor_config.patch(freezing=True):
        for _ in range(2):
            for net in nets.values():
                net(x)
        for _ in range(args.rounds):
            for name, net in nets.items():
                start = time.perf_counter()
                net(x)
                times[name].append(time.perf_counter() - start)
    base = "static per size (now)"
    cpu = bench.machine("cpu")
    print(f"{args.model} {args.precision} batch {args.first} after batch {args.second}; {cpu['cpu']}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.python_version()}")
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, times[base])]
        print(f"  {name:28s} median {1000 * statistics.median(t):8.1f} ms   time / static: "
              f"{statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
