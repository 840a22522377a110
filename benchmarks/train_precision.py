"""bf16 autocast against fp32 for training steps on this machine: what ``--precision auto`` decides from.

Times optimisation steps (forward, backward, SGD) of a registry model on random images, the two precisions
interleaved round by round in one process; prints the CPU's features and the ratio.  On CPUs without native bf16
(AVX-512 BF16 or AMX) autocast emulates it, which is what makes the fast-cifar recipe's ``auto`` train in fp32 there.

    python benchmarks/train_precision.py --model resnet20 --batch 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import resnets
from resnets.cpu import cpu_info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    torch.manual_seed(0)
    model = resnets.create_model(args.model).train().to(memory_format=torch.channels_last)
    size = model.input_size[-1]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(args.batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (args.batch,))

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in times:  # warm-up
        step(bf16)
    for _ in range(args.rounds):
        for bf16 in times:
            times[bf16].append(step(bf16))
    fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    print(f"{cpu_info().describe()}, {torch.get_num_threads()} threads, torch {torch.__version__}: {args.model} batch "
          f"{args.batch}: fp32 {args.batch / fp32:.0f} img/s, bf16 autocast {args.batch / bf16:.0f} img/s "
          f"(bf16 takes {bf16 / fp32:.2f}x as long)")


if __name__ == "__main__":
    main()
