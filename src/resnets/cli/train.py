"""``resnets train``, ``resnets plot`` and ``resnets experiment``: training runs and their curves."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..train.config import RECIPES, TrainConfig, make_config

# CLI flag -> TrainConfig field, for the options whose names differ
_RENAMED = {"no_channels_last": "channels_last", "no_progress": "progress",
            "checkpoint_every": "checkpoint_every_steps", "tensorboard_every": "tensorboard_every_steps"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (single process, or DDP under torchrun)",
                       description="Train a model on CIFAR-10 (python format), an image folder or a tar of one. "
                                   "Under 'torchrun --nproc_per_node=N -m resnets train ...' it runs DDP.")
    p.add_argument("--model", help="model name (default resnet20)")
    p.add_argument("--data", help="cifar-10-batches-py/, cifar-10-python.tar.gz, an image folder or a folder of "
                                  "train.tar/test.tar")
    p.add_argument("--recipe", choices=list(RECIPES), default=None, help="default fast-cifar")
    p.add_argument("--out", help="run directory (default runs/MODEL-RECIPE)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from RUN_DIR/last.pt")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="length in iterations (overrides --epochs)")
    p.add_argument("--batch-size", type=int, help="global batch size (split over the processes)")
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--schedule", choices=("step", "onecycle", "cosine"))
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--no-channels-last", action="store_const", const=False, help="keep NCHW memory format")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--weights", help="start from these weights (a file, or a registry name)")
    p.add_argument("--num-classes", type=int, help="classifier size (default: the data's class count)")
    p.add_argument("--freeze", choices=("none", "backbone", "bn"),
                   help="backbone: train the classifier only; bn: freeze BatchNorm statistics")
    p.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm under DDP (GPUs)")
    p.add_argument("--val-split", type=int, help="hold out this many training images as the evaluation set")
    p.add_argument("--image-size", type=int,
                   help="square training size images are decoded to (default: the model's, 32 CIFAR / 224 ImageNet)")
    p.add_argument("--train-subset", type=int, help="train on a random subset of this size")
    p.add_argument("--test-subset", type=int, help="evaluate on a random subset of this size")
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", default=None)
    p.add_argument("--cache-dir", help="decoded data cache (default ~/.cache/resnets/data)")
    p.add_argument("--data-mode", choices=("auto", "memory", "stream"),
                   help="memory: decode once into RAM; stream: decode image folders per batch with DataLoader "
                        "workers; auto (default): stream when the decoded training set would exceed 2 GiB")
    p.add_argument("--workers", type=int, help="DataLoader worker processes when streaming (default 2)")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also write TensorBoard scalars to RUN_DIR/tb (pip install 'resnets[tensorboard]')")
    p.add_argument("--tensorboard-every", type=int, help="train loss to TensorBoard every N steps (default 50)")
    p.add_argument("--no-progress", action="store_const", const=False, help="no progress bar")
    p.set_defaults(func=run_train)

    p = sub.add_parser("plot", help="draw a run's loss and error curves to PNG",
                       description="Draw RUN_DIR/metrics.jsonl to RUN_DIR/curves.png.")
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(func=run_plot)

    p = sub.add_parser("experiment", help="the paper's degradation experiment (plain vs residual nets)",
                       description="Train plain and residual nets of each depth; write a CSV and a PNG like the "
                                   "paper's Figures 1 and 6.")
    p.add_argument("name", choices=("degradation",))
    p.add_argument("--data", required=True, help="CIFAR-10 (as for 'resnets train --data')")
    p.add_argument("--depths", default="20,56", help="comma-separated 6n+2 depths (default 20,56)")
    p.add_argument("--preset", choices=("quick", "paper"), default="quick",
                   help="quick: < 30 min on a 2-core CPU; paper: the full section 4.2 schedule (GPU)")
    p.add_argument("--out", default="runs/degradation")
    p.add_argument("--epochs", type=int)
    p.add_argument("--train-subset", type=int)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--threads", type=int)
    p.add_argument("--device")
    p.add_argument("--cache-dir")
    p.add_argument("--no-progress", action="store_const", const=False)
    p.set_defaults(func=run_experiment)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Recipe defaults, or a resumed run's saved config, with the given flags on top."""
    from .common import UsageError

    values = {_RENAMED.get(k, k): v for k, v in vars(args).items()
              if v is not None and k not in ("command", "func", "debug")}
    saved = Path(args.out or "") / "config.json"
    if args.resume and args.out and saved.is_file():
        return TrainConfig.from_dict({**TrainConfig.load(saved).__dict__, **values})
    if not args.data:
        raise UsageError("--data is required (unless resuming a run with --resume --out RUN_DIR)")
    try:
        return make_config(values.pop("recipe", "fast-cifar"), **values)
    except ValueError as e:
        raise UsageError(str(e)) from e


def run_train(args: argparse.Namespace) -> int:
    from ..train import train

    result = train(config_from_args(args))
    if result.get("epoch") and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(f"done: {result['eval_split']} error {result['eval_error']:.2%} after {result['epoch']} epochs; "
              f"run directory {result['run_dir']}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from ..train.plots import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    from .common import UsageError
    from ..train.experiment import run_degradation

    try:
        depths = [int(d) for d in args.depths.split(",") if d]
    except ValueError:
        raise UsageError(f"--depths must be comma-separated integers, got {args.depths!r}") from None
    csv_path, png = run_degradation(args.data, args.out, depths, args.preset, epochs=args.epochs,
                                    train_subset=args.train_subset, precision=args.precision, threads=args.threads,
                                    device=args.device, progress=args.no_progress, cache_dir=args.cache_dir)
    print(f"{csv_path}\n{png}")
    return 0
