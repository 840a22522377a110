"""Transfer, the fine-tuning case (issue 31, proof 4c): pretrain a ResNet-20 here on five CIFAR-10 classes, then
learn the other five from 100 training images each, four ways, scored on those five classes' 5,000 test JPEGs.

* pretrain: airplane, automobile, bird, cat, deer, all their 25,000 training images, ``fast-cifar``;
* target: dog, frog, horse, ship, truck, the first 100 training images of each by file name, every test image;
* the arms, each from its seeds, the finetune arms for the same number of epochs:
  - ``linear-probe``: the pretrained backbone frozen (BatchNorm statistics too), a new head trained;
  - ``old-finetune``: the finetune recipe as it was before issue 31: every layer, ImageNet geometry (RandomResizedCrop
    to 32, evaluation resize 256/224 then crop), BatchNorm statistics updated;
  - ``new-finetune``: today's finetune recipe (the weights' own geometry and augmentation) with ``--set`` options
    (``lp_epochs``, ``backbone_lr_scale``...) to compare variants;
  - ``scratch``: the same network from random weights on the same 500 images, ``fast-cifar``.

The folders are built once from the tars in OUT/data. Finished runs are read back, so a killed call resumes. Run it
alone on the machine.

    python benchmarks/train_transfer.py --data ../shared/data/cifar10-jpeg --save benchmarks/results/train-transfer.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tarfile
from pathlib import Path
from typing import Any

import torch

import resnets
from resnets.atomic import atomic_path
from resnets.cpu import cpu_info
from resnets.train.metrics import read_metrics
from train_recipes import parse_sets

PRETRAIN = ("airplane", "automobile", "bird", "cat", "deer")
TARGET = ("dog", "frog", "horse", "ship", "truck")


def build_folders(data: Path, out: Path, per_class: int) -> tuple[Path, Path]:
    """``out/pretrain`` and ``out/target`` as image folders (train/<class>, test/<class>) cut from CIFAR-10's
    ``train.tar`` and ``test.tar``; the target's training split keeps the first ``per_class`` files of each class."""
    done = out / "done"
    if not done.is_file():
        for split in ("train", "test"):
            with tarfile.open(data / f"{split}.tar") as tar:
                members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
                kept: dict[str, int] = {}
                for m in members:
                    cls = Path(m.name).parent.name
                    part = "pretrain" if cls in PRETRAIN else "target" if cls in TARGET else None
                    if part is None:
                        continue
                    if part == "target" and split == "train":
                        kept[cls] = kept.get(cls, 0) + 1
                        if kept[cls] > per_class:
                            continue
                    dest = out / part / split / cls / Path(m.name).name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(tar.extractfile(m).read())
        done.write_text("")
    return out / "pretrain", out / "target"


def run(options: dict[str, Any], out: Path) -> dict[str, Any]:
    """``resnets.train`` with ``options`` into ``out`` unless a finished run is there; its last and best top-1."""
    rows = read_metrics(out) if (out / "metrics.csv").is_file() else []
    if not rows or rows[-1]["epoch"] < options["epochs"]:
        resnets.train(**options, out=str(out), progress=False, resume=(out / "last.pt").is_file())
        rows = read_metrics(out)
    return {"top1": round(100 * (1 - rows[-1]["eval_error"]), 2),
            "best_top1": round(100 * (1 - min(r["eval_error"] for r in rows)), 2),
            "wall_s": round(rows[-1]["wall_s"], 1), "epochs": rows[-1]["epoch"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="CIFAR-10 as the JPEG folder of train.tar/test.tar")
    p.add_argument("--out", type=Path, default=Path("runs/transfer"))
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=20, help="epochs of the probe and finetune arms (default: 20)")
    p.add_argument("--scratch-epochs", type=int, default=60)
    p.add_argument("--per-class", type=int, default=100, help="target training images per class (default: 100)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="linear-probe,old-finetune,new-finetune,scratch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an option of new-finetune")
    p.add_argument("--name", default="new-finetune", help="the new-finetune arm's name, to keep variants apart")
    p.add_argument("--save", type=Path, help="the JSON results file; runs already in it are kept")
    args = p.parse_args()
    pretrain, target = build_folders(args.data, args.out / "data", args.per_class)
    base = run({"model": "resnet20", "data": str(pretrain), "recipe": "fast-cifar", "epochs": args.pretrain_epochs,
                "seed": 0}, args.out / "pretrain")
    print("pretrain", json.dumps(base), flush=True)
    weights = str(args.out / "pretrain" / "model.safetensors")
    finetune = {"data": str(target), "recipe": "finetune", "weights": weights, "epochs": args.epochs}
    arms = {
        "linear-probe": {**finetune, "freeze": "backbone"},
        "old-finetune": {**finetune, "augmentation": "random-resized-crop", "eval_resize": 256 / 224},
        "new-finetune": {**finetune, **parse_sets(args.set)},
        "scratch": {"model": "resnet20", "data": str(target), "recipe": "fast-cifar", "epochs": args.scratch_epochs},
    }
    document = json.loads(args.save.read_text()) if args.save and args.save.is_file() else {"arms": {}}
    for arm in args.arms.split(","):
        name = args.name if arm == "new-finetune" else arm
        results = []
        for seed in (int(s) for s in args.seeds.split(",")):
            options = {**arms[arm], "seed": seed}
            results.append({"seed": seed, **run(options, args.out / name / f"s{seed}")})
            print(name, json.dumps(results[-1]), flush=True)
        document["arms"][name] = {"options": {k: v for k, v in arms[arm].items() if k != "data"},
                                  "mean_top1": round(statistics.mean(r["top1"] for r in results), 2),
                                  "runs": results}
    document.update({"command": " ".join(sys.argv), "machine": cpu_info().describe(),
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "python": platform.python_version(), "pretrain": base})
    print(json.dumps({k: v["mean_top1"] for k, v in document["arms"].items()}, indent=2))
    if args.save:
        with atomic_path(args.save) as tmp:
            Path(tmp).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
