"""Every option of a run checked before any work (data, weights), each error naming the argument."""

from __future__ import annotations

import importlib.util

from ..choices import AUTO_AUGMENT, FREEZE_MODES, LOSSES, LR_WARMUP_METHODS, OPTIMIZERS, TRAIN_PRECISIONS
from ..errors import BadInput, MissingExtra
from .config import TrainConfig


def check_config(config: TrainConfig) -> None:
    """Raise on the first option of ``config`` that cannot work, naming it and what it takes."""
    if config.precision not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {config.precision!r}")
    if config.freeze not in FREEZE_MODES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_MODES)}, got {config.freeze!r}")
    if config.normalize not in ("channel", "pixel", "weights"):
        raise ValueError(f"normalize must be 'channel', 'pixel' or 'weights', got {config.normalize!r}")
    if not config.data:
        raise BadInput("no training data given (data=)")
    if not config.epochs and not config.max_steps:
        raise ValueError("give the run length as epochs or max_steps")
    for name in ("epochs", "max_steps", "batch_size", "eval_batch_size"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise BadInput(f"{name}= must be a positive integer, got {value!r}")
    if config.freeze == "backbone" and not config.weights:
        raise BadInput("freeze='backbone' trains the classifier alone, on top of pretrained weights: "
                       "give weights= (a registry name or a file)")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise MissingExtra("tensorboard=True needs the tensorboard package: pip install 'resnets[tensorboard]'")
    check_components(config)


def check_components(config: TrainConfig) -> None:
    """The modern-training options: choices, ranges, and the extra LAMB and LARS need."""
    for name, value, choices in (("opt", config.opt, OPTIMIZERS), ("loss", config.loss, LOSSES),
                                 ("lr_warmup_method", config.lr_warmup_method, LR_WARMUP_METHODS),
                                 ("auto_augment", config.auto_augment, (None, *AUTO_AUGMENT))):
        if value not in choices:
            raise BadInput(f"{name}= must be one of {', '.join(c for c in choices if c)}, got {value!r}")
    if config.opt in ("lamb", "lars") and importlib.util.find_spec("timm") is None:
        raise MissingExtra(f"opt={config.opt!r} is timm's optimizer: pip install \"resnets[train]\"")
    if config.bce_target_thresh is not None and config.loss != "bce":
        raise BadInput("bce_target_thresh= applies to loss='bce' only")
    for name in ("random_erase", "distill_alpha", "lr_warmup_decay"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise BadInput(f"{name}= must be in [0, 1], got {getattr(config, name)!r}")
    for name in ("mixup_alpha", "cutmix_alpha", "lr_warmup_epochs", "ra_reps", "start_ramp"):
        if getattr(config, name) < 0:
            raise BadInput(f"{name}= must be >= 0 (0: off), got {getattr(config, name)!r}")
    for name in ("model_ema_steps", "ra_magnitude", "augmix_severity", "res_step", "train_crop_size",
                 "val_resize_size", "val_crop_size", "min_res", "max_res", "end_ramp"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise BadInput(f"{name}= must be a positive integer, got {value!r}")
    for name in ("clip_grad_norm", "distill_temperature"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise BadInput(f"{name}= must be positive, got {value!r}")
    if not 0.0 < config.model_ema_decay < 1.0:
        raise BadInput(f"model_ema_decay= must be in (0, 1), got {config.model_ema_decay!r}")
    if config.min_res is None and (config.max_res is not None or config.end_ramp is not None):
        raise BadInput("max_res= and end_ramp= shape progressive resizing, which min_res= turns on")
    if config.normalize == "pixel" and (config.train_crop_size or config.val_crop_size or config.min_res):
        raise BadInput("normalize='pixel' subtracts a per-pixel mean of one size: train_crop_size=, val_crop_size= "
                       "and min_res= need channel normalisation")
