"""Does decoding steal more than its own CPU time in ``resnets features``? The local engine as the package runs it
(before) against a candidate fix (after), in one run:

* ``--variant nice``: the DataLoader workers decode at a lower priority (``os.nice``). The model's threads take
  every core and meet at every layer, so a worker decoding the next batch on one core could stall the whole layer;
  at a lower priority decoding would fill the model's idle time instead.
* ``--variant ov-latency`` (OpenVINO models): every batch on the one-stream LATENCY compile instead of the
  THROUGHPUT streams, whose chunks wait for the slowest when a decoder takes a core.

If either effect were there, the job would speed up.  Each round runs the same job both ways back to back (fresh output files, the same images),
and the speed-up is the median of the per-round ratios, so load from other processes hits both alike.  The model
alone (preprocessed batches, no decoding) is timed in each round too, as the ceiling.

    python benchmarks/features_threads.py --model resnet18 --precision int8 --passes 3 --variant nice
    python benchmarks/features_threads.py --model resnet18 --precision int8 --passes 3 --variant ov-latency
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-samples"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    p.add_argument("--backend", default=None, help="default: eager at fp32, auto otherwise (as resnets features)")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--passes", type=int, default=2, help="times each image is listed (default: 2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variant", choices=("nice", "ov-latency"), default="nice")
    p.add_argument("--niceness", type=int, default=10, help="--variant nice: the decoders' priority (default: 10)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = p.parse_args()

    import torch

    from resnets.cpu import cpu_info
    from resnets.data.images import find_images
    from resnets.features import extract_features
    from resnets.data.batches import file_batches
    from resnets.pipeline import load_inference, run_model

    paths = find_images(args.images)
    files = [Path(tempfile.mkdtemp()) / f"{i}-{p.name}" for i in range(args.passes) for p in paths]
    for link, target in zip(files, paths * args.passes):  # distinct names: every file is work, none is resumed
        link.symlink_to(target.resolve())
    inf = load_inference(args.model, None, args.precision, features=("avg", None), calibration=paths, device="cpu",
                         backend=args.backend)
    if args.variant == "ov-latency" and inf.backend != "openvino":
        p.error(f"--variant ov-latency needs an OpenVINO model; this one runs on {inf.backend} (--backend openvino)")
    after = args.niceness
    loader = torch.utils.data.DataLoader

    class NicerLoader(loader):  # the package's loader, its workers started at a lower priority
        def __init__(self, *a, **kw) -> None:
            if kw.get("num_workers"):
                kw["worker_init_fn"] = lambda worker_id: os.nice(after)
            super().__init__(*a, **kw)
    batch = next(b for b, _ in file_batches(paths[: args.batch_size], inf.preprocessing, args.batch_size, 0)).images
    run_model(inf.model, batch)  # warm-up (compiles, if it does)
    extract_features(inf, files[: args.batch_size * 2], Path(tempfile.mkdtemp()) / "warm.npy", args.batch_size,
                     args.workers, progress=False)

    model, forward = inf.model, inf.model.forward

    def one_stream(x: torch.Tensor) -> torch.Tensor:  # OVModel.forward with every batch on the LATENCY compile
        with model._lock:
            return torch.from_numpy(model._latency_request().infer({0: x.numpy()}, share_inputs=True)[0].copy())

    def job(fix: bool) -> float:
        if args.variant == "nice":
            torch.utils.data.DataLoader = NicerLoader if fix else loader
        else:
            model.forward = one_stream if fix else forward
        out = Path(tempfile.mkdtemp()) / "features.npy"
        start = time.perf_counter()
        extract_features(inf, files, out, args.batch_size, args.workers, progress=False)
        return len(files) / (time.perf_counter() - start)

    def model_alone() -> float:
        start, calls = time.perf_counter(), 0
        while calls < 3 or time.perf_counter() - start < 3:
            run_model(inf.model, batch)
            calls += 1
        return calls * len(batch) / (time.perf_counter() - start)

    rounds = []
    for r in range(args.rounds):
        row = {"before": job(False), "after": job(True), "model_alone": model_alone()}
        row["ratio"] = row["after"] / row["before"]
        rounds.append(row)
        print(f"round {r + 1}: as packaged {row['before']:.1f} img/s, {args.variant} {row['after']:.1f} img/s "
              f"({row['ratio']:.2f}x); model alone {row['model_alone']:.1f} img/s", flush=True)
    summary = {"cpu": cpu_info().describe(), "threads": torch.get_num_threads(), "model": args.model,
               "precision": args.precision, "backend": inf.backend, "images": len(files), "workers": args.workers,
               "batch_size": args.batch_size, "variant": args.variant,
               **({"niceness": after} if args.variant == "nice" else {}),
               "median_ratio": statistics.median(r["ratio"] for r in rounds),
               "median_before_of_model_alone": statistics.median(r["before"] / r["model_alone"] for r in rounds),
               "median_after_of_model_alone": statistics.median(r["after"] / r["model_alone"] for r in rounds),
               "rounds": rounds}
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
