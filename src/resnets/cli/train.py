"""``resnets train``, ``resnets plot`` and ``resnets experiment``: training runs and their curves."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..choices import (AUTO_AUGMENT, DATA_MODES, DECODE_MODES, FREEZE_MODES, LOSSES, LR_WARMUP_METHODS, OPTIMIZERS,
                       SCHEDULES, TRAIN_PRECISIONS)
from .common import DEVICE_HELP, UsageError, add_progress_option, flags_in_errors, parse_device

if TYPE_CHECKING:
    from ..train.config import TrainConfig

# CLI flag -> TrainConfig field, for the options whose names differ
_RENAMED = {"no_channels_last": "channels_last", "checkpoint_every": "checkpoint_every_steps",
            "tensorboard_every": "tensorboard_every_steps"}
DATA_CACHE_HELP = "decoded data cache (default: $RESNETS_CACHE/data, else ~/.cache/resnets/data)"


def register(sub: argparse._SubParsersAction) -> None:
    # The options are added on first use (cli.common.Parser): their help quotes the recipes, which import torch.
    p = sub.add_parser("train", help="train a model (single process, or DDP under torchrun)",
                       description="Train a model on CIFAR-10 (python format), an image folder or a tar of one. "
                                   "Under 'torchrun --nproc_per_node=N -m resnets train ...' it runs DDP. Options "
                                   "left out take the recipe's value, shown per recipe.",
                       options=_train_options)
    p.set_defaults(func=run_train)

    p = sub.add_parser("plot", help="draw a run's loss and error curves to PNG",
                       description="Draw RUN_DIR/metrics.jsonl to RUN_DIR/curves.png.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of 'resnets train'")
    p.add_argument("--out", help="PNG path (default: RUN_DIR/curves.png)")
    p.set_defaults(func=run_plot)

    p = sub.add_parser("experiment", help="the paper's degradation experiment (plain vs residual nets)",
                       description="Train plain and residual nets of each depth; write a CSV and a PNG like the "
                                   "paper's Figures 1 and 6. Options left out take the preset's value.",
                       options=_experiment_options)
    p.set_defaults(func=run_experiment)


def _recipe_default(field: str, table: dict[str, dict[str, Any]] | None = None, what: str = "recipe",
                    none: str = "none") -> str:
    """``(default: ...)`` for a training option: one value, or each recipe's (or preset's) own; ``none`` says what
    None means."""
    from ..train.config import RECIPES, TrainConfig

    def shown(values: dict[str, Any]) -> str:
        value = values.get(field, getattr(TrainConfig, field))
        if field == "epochs" and value is None and values.get("max_steps"):
            return f"{values['max_steps']:,} steps"
        if isinstance(value, bool) or value is None:
            return {None: none, True: "on", False: "off"}[value]
        return f"{value:,}" if isinstance(value, int) else str(value)

    per = {name: shown(values) for name, values in (RECIPES if table is None else table).items()}
    if len(set(per.values())) == 1:
        return f"(default: {next(iter(per.values()))})"
    return f"(default: the {what}'s: " + ", ".join(f"{name} {value}" for name, value in per.items()) + ")"


def _train_options(p: argparse.ArgumentParser) -> None:
    from ..train.augment import AUGMENTATIONS
    from ..train.config import RECIPES, TrainConfig

    d = _recipe_default
    p.add_argument("--model", help=f"model name from 'resnets list' (default: {TrainConfig.model})")
    p.add_argument("--data", help="cifar-10-batches-py/, cifar-10-python.tar.gz, an image folder or a folder of "
                                  "train.tar/test.tar (required unless resuming)")
    p.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help=f"the training recipe; other options default to its values (default: {TrainConfig.recipe})")
    p.add_argument("--out", help="run directory (default: runs/MODEL-RECIPE)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue from RUN_DIR/last.pt (default: start a new run)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved recipe (every option), the number of steps and the time estimated on "
                        "this device from a few timed steps, then exit without writing anything (default: off, train)")
    p.add_argument("--epochs", type=int, help="length in passes over the training set " + d("epochs"))
    p.add_argument("--max-steps", type=int, help="length in iterations; overrides --epochs " + d("max_steps"))
    p.add_argument("--batch-size", type=int, help="global batch size, split over the processes " + d("batch_size"))
    p.add_argument("--lr", type=float, help="learning rate at the start (step) or peak (onecycle, cosine) " + d("lr"))
    p.add_argument("--weight-decay", type=float, help="L2 weight decay " + d("weight_decay"))
    p.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing " + d("label_smoothing"))
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="learning-rate schedule: step (/10 at the recipe's milestones: 50%% and 75%% of the run for CIFAR, "
                        "1/3 and 2/3 for ImageNet), onecycle, cosine or triangular (FFCV's: up to --lr-peak-epoch, "
                        "then down to 0) " + d("schedule"))
    p.add_argument("--precision", choices=TRAIN_PRECISIONS,
                   help="training arithmetic: auto (bf16 where the device computes it natively, else fp32), fp32, bf16 "
                        "autocast, or fp16 with loss scaling (CUDA) " + d("precision"))
    p.add_argument("--no-channels-last", action="store_const", const=False,
                   help="keep NCHW memory format (default: channels-last)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (default: eager)")
    p.add_argument("--weights", help="start from these weights: a file, a registry name, hf-hub:ORG/NAME[@REVISION], "
                                     "'imagenet' or 'cifar10'; without --model, the network they are for "
                                     "(default: random weights)")
    p.add_argument("--num-classes", type=int, help="classifier size (default: the data's class count)")
    p.add_argument("--freeze", choices=FREEZE_MODES,
                   help="backbone: train the classifier only, the backbone's BatchNorm statistics frozen too; bn: "
                        "freeze BatchNorm statistics (default: none)")
    p.add_argument("--lp-epochs", type=int,
                   help="linear probe, then fine-tune: train the classifier alone (backbone and BatchNorm statistics "
                        "frozen) for the first N epochs, then every layer " + d("lp_epochs"))
    p.add_argument("--backbone-lr-scale", type=float, metavar="F",
                   help="the backbone's learning rate as this share of the classifier's, in (0, 1] "
                        + d("backbone_lr_scale"))
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="SyncBatchNorm under DDP (GPUs) (default: per-process BatchNorm)")
    p.add_argument("--val-split", type=int,
                   help="hold out this many training images as the evaluation set (default: 0, evaluate on the "
                        "test split)")
    p.add_argument("--image-size", type=int,
                   help="square training size images are decoded to (default: the model's, 32 CIFAR / 224 ImageNet; "
                        "finetune: the weights' crop size)")
    p.add_argument("--augmentation", choices=AUGMENTATIONS,
                   help="the training augmentation: pad-crop (pad 4, random crop, flip), random-resized-crop "
                        "(and flip), none " + d("augmentation", none="as the weights were trained"))
    p.add_argument("--eval-resize", type=float, metavar="R",
                   help="shorter side before the evaluation centre crop, as a multiple of the image size "
                        + d("eval_resize", none="the weights' own"))
    p.add_argument("--train-subset", type=int, help="train on a random subset of this size (default: all images)")
    p.add_argument("--test-subset", type=int, help="evaluate on a random subset of this size (default: all images)")
    p.add_argument("--checkpoint-every", type=int,
                   help="also checkpoint every N steps (default: 0, at the end of each epoch only)")
    p.add_argument("--device", type=parse_device, help=DEVICE_HELP)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's, one per core)")
    p.add_argument("--seed", type=int, help="seed of the initialisation, data order and augmentation " + d("seed"))
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic kernels only (torch.use_deterministic_algorithms; slower) (default: off)")
    p.add_argument("--cache-dir", help=DATA_CACHE_HELP)
    p.add_argument("--data-mode", choices=DATA_MODES,
                   help="memory: decode once into RAM; stream: decode image folders per batch with DataLoader "
                        "workers; auto: stream when the decoded training set would exceed 2 GiB (default: auto)")
    p.add_argument("--decode", choices=DECODE_MODES,
                   help="resize: each image decoded to the recipe's square (once, or per step when streaming) and "
                        "cropped from it, the same pixels in both data modes; crop: streaming, each training image "
                        "decoded at the size its random crop needs, the box drawn on the whole image as "
                        "torchvision's RandomResizedCrop does (default: the recipe's: crop for the ImageNet recipes, else resize)")
    p.add_argument("--workers", type=int,
                   help=f"DataLoader worker processes when streaming (default: {TrainConfig.workers})")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also write TensorBoard scalars to RUN_DIR/tb (pip install 'resnets[tensorboard]') "
                        "(default: off)")
    p.add_argument("--tensorboard-every", type=int,
                   help=f"train loss to TensorBoard every N steps (default: {TrainConfig.tensorboard_every_steps})")
    _component_options(p.add_argument_group("modern training (torchvision's reference flags; off unless the recipe "
                                            "turns them on)"))
    add_progress_option(p)


def _component_options(g: argparse._ArgumentGroup) -> None:
    """Optimizer, loss, augmentation, EMA, sizes and distillation: train/optim, mixing, policies, ema, distill."""
    d = _recipe_default
    g.add_argument("--opt", choices=OPTIMIZERS,
                   help="optimizer; lamb and lars are timm's (pip install \"resnets[train]\") " + d("opt"))
    g.add_argument("--norm-weight-decay", metavar="F", type=float,
                   help="weight decay of normalisation layers' parameters; none: --weight-decay's "
                        + d("norm_weight_decay"))
    g.add_argument("--bias-weight-decay", metavar="F", type=float,
                   help="weight decay of bias parameters; none: --weight-decay's " + d("bias_weight_decay"))
    g.add_argument("--clip-grad-norm", metavar="NORM", type=float,
                   help="clip the gradients' global norm " + d("clip_grad_norm"))
    g.add_argument("--lr-warmup-epochs", metavar="N", type=int,
                   help="epochs of learning-rate warm-up before the schedule " + d("lr_warmup_epochs"))
    g.add_argument("--lr-warmup-method", choices=LR_WARMUP_METHODS,
                   help="warm-up at lr x --lr-warmup-decay (constant), or rising from it to lr (linear) "
                        + d("lr_warmup_method"))
    g.add_argument("--lr-warmup-decay", metavar="F", type=float, help="the warm-up's factor " + d("lr_warmup_decay"))
    g.add_argument("--lr-peak-epoch", metavar="EPOCH", type=float,
                   help="--schedule triangular (FFCV's): the epoch the learning rate peaks at " + d("lr_peak_epoch"))
    g.add_argument("--loss", choices=LOSSES, help="cross-entropy, or binary cross-entropy per class " + d("loss"))
    g.add_argument("--bce-target-thresh", metavar="T", type=float,
                   help="bce: targets above this become 1, the others 0 (timm's) " + d("bce_target_thresh"))
    g.add_argument("--mixup-alpha", metavar="A", type=float, help="MixUp's alpha; 0: off " + d("mixup_alpha"))
    g.add_argument("--cutmix-alpha", metavar="A", type=float,
                   help="CutMix's alpha, 0: off; with --mixup-alpha one of the two per batch " + d("cutmix_alpha"))
    g.add_argument("--auto-augment", choices=AUTO_AUGMENT,
                   help="per-image policy: TrivialAugmentWide, RandAugment, AugMix or an AutoAugment policy "
                        + d("auto_augment"))
    g.add_argument("--ra-magnitude", metavar="M", type=int, help="RandAugment's magnitude " + d("ra_magnitude"))
    g.add_argument("--augmix-severity", metavar="S", type=int, help="AugMix's severity " + d("augmix_severity"))
    g.add_argument("--random-erase", metavar="P", type=float, help="random erasing probability " + d("random_erase"))
    g.add_argument("--ra-reps", metavar="N", type=int,
                   help="repeated augmentation: each image N times per epoch (torchvision's RASampler); 0: off "
                        + d("ra_reps"))
    g.add_argument("--model-ema", action=argparse.BooleanOptionalAction,
                   help="evaluate and save an exponential moving average of the weights " + d("model_ema"))
    g.add_argument("--model-ema-steps", metavar="N", type=int,
                   help="update the average every N steps " + d("model_ema_steps"))
    g.add_argument("--model-ema-decay", metavar="D", type=float,
                   help="its decay, adjusted to batch size, steps and epochs as torchvision's " + d("model_ema_decay"))
    g.add_argument("--train-crop-size", metavar="SIDE", type=int,
                   help="side of the training crops; none: --image-size " + d("train_crop_size"))
    g.add_argument("--val-resize-size", metavar="SIDE", type=int,
                   help="evaluation shorter side before the crop; none: the crop times the recipe's resize ratio "
                        + d("val_resize_size"))
    g.add_argument("--val-crop-size", metavar="SIDE", type=int,
                   help="evaluation centre crop; none: --image-size " + d("val_crop_size"))
    g.add_argument("--min-res", metavar="SIDE", type=int,
                   help="progressive resizing (FFCV's): the first epochs' training side; off unless given "
                        + d("min_res"))
    g.add_argument("--max-res", metavar="SIDE", type=int,
                   help="progressive resizing's last side; none: the training crop " + d("max_res"))
    g.add_argument("--start-ramp", metavar="EPOCH", type=int,
                   help="epoch (from 0) the side starts rising " + d("start_ramp"))
    g.add_argument("--end-ramp", metavar="EPOCH", type=int,
                   help="epoch it reaches --max-res; none: the last " + d("end_ramp"))
    g.add_argument("--res-step", metavar="N", type=int, help="sides in multiples of this " + d("res_step"))
    g.add_argument("--teacher", metavar="WEIGHTS",
                   help="distil from these weights (a file or catalogue name; their own preprocessing and classes) "
                        + d("teacher"))
    g.add_argument("--distill-alpha", metavar="A", type=float,
                   help="share of the label loss; the rest is the teacher's soft labels " + d("distill_alpha"))
    g.add_argument("--distill-temperature", metavar="T", type=float,
                   help="softmax temperature of both " + d("distill_temperature"))


def _cifar_depths() -> list[int]:
    """Depths with both a plain and a residual CIFAR net registered (what the experiment can compare)."""
    from ..networks import CIFAR_DEPTHS
    from ..registry import list_models

    names = set(list_models())
    return [d for d in CIFAR_DEPTHS if f"plain{d}" in names and f"resnet{d}" in names]


def _experiment_options(p: argparse.ArgumentParser) -> None:
    from ..train.config import RECIPES
    from ..train.experiment import PRESETS

    presets = {name: {**RECIPES[settings["recipe"]], **settings} for name, settings in PRESETS.items()}

    def d(field: str) -> str:
        return _recipe_default(field, presets, "preset")

    p.add_argument("name", choices=("degradation",), help="the experiment: degradation (Figures 1 and 6)")
    p.add_argument("--data", required=True, help="CIFAR-10, as for 'resnets train --data' (required)")
    p.add_argument("--depths", default="20,56",
                   help="comma-separated CIFAR depths 6n+2 that have a plain twin: "
                        f"{', '.join(map(str, _cifar_depths()))} (default: 20,56)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="quick",
                   help="tiny: the plain-net half only (a training subset for a few epochs, a test subset), for a "
                        "short CPU budget; quick: both halves (every training image, 7 epochs); paper: the full "
                        "section 4.2 schedule, for a GPU. The estimated time is printed first (default: quick)")
    p.add_argument("--out", default="runs/degradation",
                   help="folder for the runs, the CSV and the PNG (default: runs/degradation)")
    p.add_argument("--epochs", type=int, help="length of each run in epochs " + d("epochs"))
    p.add_argument("--train-subset", type=int, help="train on a random subset of this size " + d("train_subset"))
    p.add_argument("--test-subset", type=int,
                   help="evaluate after each epoch on a random test subset of this size " + d("test_subset"))
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, help="training arithmetic " + d("precision"))
    p.add_argument("--seed", type=int, help="seed of every net's run " + d("seed"))
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's, one per core)")
    p.add_argument("--device", type=parse_device, help=DEVICE_HELP)
    p.add_argument("--cache-dir", help=DATA_CACHE_HELP)
    add_progress_option(p)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Recipe defaults, or a resumed run's saved config, with the given flags on top."""
    from ..train.config import run_config

    values = {_RENAMED.get(k, k): v for k, v in vars(args).items()
              if k not in ("command", "func", "debug", "dry_run")}
    try:
        with train_flags():
            return run_config(**values)
    except ValueError as e:
        raise UsageError(str(e)) from e


def train_flags():
    """Training errors, which name TrainConfig fields (``resume=True``), naming this command's flags (``--resume``)."""
    from ..train.config import TrainConfig

    return flags_in_errors([f.name for f in dataclasses.fields(TrainConfig)], {v: k for k, v in _RENAMED.items()})


def run_train(args: argparse.Namespace) -> int:
    from ..train import train

    config = config_from_args(args)
    if args.dry_run:
        with train_flags():
            print(dry_run(config))
        return 0
    with train_flags():
        result = train(config)
    if result.get("epoch") and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(f"done: {result['eval_split']} error {result['eval_error']:.2%} after {result['epoch']} epochs; "
              f"run directory {result['run_dir']}")
    return 0


def dry_run(config: TrainConfig, timed_steps: int = 3) -> str:
    """What ``resnets train`` would do with ``config``: every option, the number of steps over the listed data and
    the time estimated on this device (:func:`~resnets.train.experiment.estimate_seconds`, a few steps of this
    process's share of the batch, at most 32 images, scaled to the run). Lists the data; writes nothing."""
    import math

    from ..device import resolve_device
    from ..train.config import default_image_size
    from ..train.data import list_splits
    from ..train.experiment import _duration, estimate_seconds
    from ..train.repeated import repeated_steps
    from ..train.validate import check_config

    check_config(config)
    if config.model is None:
        raise UsageError("--dry-run needs --model (the network to time)")
    splits = list_splits(config)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    n = len(splits.train)
    per_epoch = repeated_steps(n, world, config.batch_size) if config.ra_reps else n // config.batch_size
    total = config.max_steps or config.epochs * per_epoch
    local = config.batch_size // world
    side = config.max_res or config.train_crop_size or config.image_size or default_image_size(config.model)
    probe = dataclasses.replace(config, batch_size=min(local, 32), eval_batch_size=min(config.eval_batch_size, 32),
                                image_size=side, max_steps=None, epochs=1)
    epoch_s = estimate_seconds(probe, per_epoch * local, math.ceil(len(splits.eval) / world), timed_steps)
    seconds = epoch_s * total / max(per_epoch, 1)
    lines = [f"recipe {config.recipe}, resolved (config.json of the run would hold the same):"]
    lines += [f"  {f.name}: {getattr(config, f.name)!r}" for f in dataclasses.fields(config)]
    lines += [
        f"data: {n:,} training images in {len(splits.train.classes):,} classes, {len(splits.eval):,} evaluation "
        f"images ({splits.eval_name})",
        f"steps: {total:,} ({per_epoch:,} per epoch of global batch {config.batch_size:,}; {world} process"
        f"{'es' if world > 1 else ''}, {local:,} images each per step)",
        f"estimated: {_duration(seconds)} on {resolve_device(config.device)} (timed over {timed_steps} steps of "
        f"{probe.batch_size} images at {side} px, scaled to the run; reading and decoding the images "
        "not counted)",
        "dry run: nothing written",
    ]
    return "\n".join(lines)


def run_plot(args: argparse.Namespace) -> int:
    from ..train.plots import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    from ..train.experiment import run_degradation

    valid = _cifar_depths()
    try:
        depths = [int(d) for d in args.depths.split(",") if d.strip()]
    except ValueError:
        raise UsageError(f"--depths must be comma-separated integers, got {args.depths!r}") from None
    bad = [d for d in depths if d not in valid]
    if not depths or bad:
        why = "is not of the form 6n+2" if bad and (bad[0] - 2) % 6 else "has no registered plain and residual net"
        raise UsageError(f"--depths {args.depths}: {bad[0] if bad else 'no depth'} {why if bad else 'given'}; "
                         f"choose from {', '.join(map(str, valid))}")
    with train_flags():
        csv_path, png = run_degradation(args.data, args.out, depths, args.preset, epochs=args.epochs,
                                        train_subset=args.train_subset, test_subset=args.test_subset,
                                        precision=args.precision, seed=args.seed,
                                        threads=args.threads, device=args.device, progress=args.progress,
                                        cache_dir=args.cache_dir)
    print(f"{csv_path}\n{png}")
    return 0
