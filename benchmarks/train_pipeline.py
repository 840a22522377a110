"""The training input pipeline, images/s per core: ours against torchvision's reference, in the same run.

The recipe is tv-v2's (torchvision's improved recipe): RandomResizedCrop 176, horizontal flip, TrivialAugmentWide,
to float and normalised, RandomErasing 0.1, collated into a batch of the model's input.

* reference: torchvision's ``references/classification`` pipeline as ``ImageFolder`` runs it: a list of
  (path, label), PIL decoding of the whole file (``Image.open(f).convert("RGB")``), then
  ``v2.Compose([RandomResizedCrop(176, antialias=True), RandomHorizontalFlip(), TrivialAugmentWide(bilinear),
  PILToTensor(), ToDtype(float32, scale=True), Normalize(mean, std), RandomErasing(0.1)])`` per image and
  ``default_collate``;
* ours: what ``resnets train --decode crop`` runs: :class:`resnets.train.streaming.CropFiles` per image under its
  seed (the crop drawn on the header's size, the JPEG decoded by libjpeg-turbo through simplejpeg at the smallest
  DCT scale that keeps it, crop and antialiased resize in one step on the uint8 tensor, flip and
  TrivialAugmentWide on the uint8 crop), uint8 collation, then the trainer's batch steps: the recorded
  preprocessing's normalisation (torchvision's arithmetic, in place) and RandomErasing per image under its seed.

One process, one thread (``torch.set_num_threads(1)``): images per second per core. Rounds alternate which pipeline
runs first; each round reports both rates and their ratio; the JSON goes to ``benchmarks/results/``.

    python benchmarks/train_pipeline.py --seconds 120
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

from resnets.cpu import cpu_info
from resnets.data.images import collate_images, find_images
from resnets.preprocess import Preprocessing
from resnets.train.augment import RecipeTransforms
from resnets.train.policies import SamplePolicy, draw_seeds
from resnets.train.streaming import CropFiles

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-samples"


def reference(paths: list[Path], batch_size: int) -> int:
    """torchvision's reference pipeline over ``paths``, in batches; returns the images done."""
    transform = v2.Compose([
        v2.RandomResizedCrop(176, antialias=True), v2.RandomHorizontalFlip(),
        v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR), v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD), v2.RandomErasing(0.1)])
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start:start + batch_size]:
            with open(path, "rb") as f:
                img = Image.open(f).convert("RGB")  # torchvision.datasets.folder.pil_loader
            batch.append((transform(img), 0))
        torch.utils.data.default_collate(batch)
    return len(paths)


def ours(paths: list[Path], batch_size: int) -> int:
    """Our pipeline over ``paths``, in batches; returns the images done."""
    policy = SamplePolicy("ta_wide", random_erase=0.1)
    files, normalize = CropFiles(paths, RecipeTransforms(176, "random-resized-crop", policy=policy)), Preprocessing(
        MEAN, STD).normalize
    seeds = draw_seeds(len(paths), torch.Generator().manual_seed(0))
    for start in range(0, len(paths), batch_size):
        batch = collate_images([files[(i, int(seeds[i]), 176)] for i in range(start, min(start + batch_size,
                                                                                           len(paths)))])
        policy.erase(normalize(batch.images), seeds[batch.indices, None])
    return len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help=f"JPEG photos (default: {DATA})")
    parser.add_argument("--seconds", type=float, default=120, help="total time to spend (default: 120)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_pipeline.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    paths = find_images(args.data)
    ours(paths[:8], 8), reference(paths[:8], 8)  # warm-up: imports, first calls
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rounds, start = [], time.perf_counter()
    while time.perf_counter() - start < args.seconds or len(rounds) < 2:
        rates = {}
        for name, run in ((("ours", ours), ("reference", reference)) if len(rounds) % 2 == 0
                          else (("reference", reference), ("ours", ours))):
            t0 = time.perf_counter()
            done = run(paths, args.batch_size)
            rates[name] = done / (time.perf_counter() - t0)
        rates["ratio"] = rates["ours"] / rates["reference"]
        rounds.append(rates)
        print(f"round {len(rounds)}: ours {rates['ours']:.1f} img/s, reference {rates['reference']:.1f} img/s, "
              f"ratio {rates['ratio']:.2f}", flush=True)
    result = {
        "benchmark": "training input pipeline (tv-v2: RandomResizedCrop 176, flip, TrivialAugmentWide, normalize, "
                     "RandomErasing 0.1, collation), one process, one thread",
        "cpu": cpu_info().describe(), "python": platform.python_version(), "torch": torch.__version__,
        "images": len(paths), "data": str(args.data), "batch_size": args.batch_size, "rounds": rounds,
        "median_ours_img_s_per_core": statistics.median(r["ours"] for r in rounds),
        "median_reference_img_s_per_core": statistics.median(r["reference"] for r in rounds),
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "load_average_before": load_before, "load_average_after": Path("/proc/loadavg").read_text().split()[:3],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"median: ours {result['median_ours_img_s_per_core']:.1f} img/s/core, reference "
          f"{result['median_reference_img_s_per_core']:.1f}, ratio {result['median_ratio']:.2f} on {result['cpu']}; "
          f"{args.out}")


if __name__ == "__main__":
    main()
