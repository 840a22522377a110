"""Every option of a run checked before any work (data, weights), each error naming the argument."""

from __future__ import annotations

import importlib.util
import math

from ..choices import (AUTO_AUGMENT, DATA_MODES, DECODE_MODES, DEVICE_PATTERN, FREEZE_MODES, LOSSES, LR_WARMUP_METHODS,
                       NORMALIZE_MODES, OPTIMIZERS, SCHEDULES, TRAIN_PRECISIONS)
from ..errors import BadInput, MissingExtra, UnknownName
from ..registry import model_builder
from .augment import AUGMENTATIONS
from .config import RECIPES, TrainConfig


def check_config(config: TrainConfig) -> None:
    """Raise on the first option of ``config`` that cannot work, naming it and what it takes: before any data is
    listed or weights read, so a typo costs nothing."""
    for name, choices in (("recipe", tuple(RECIPES)), ("precision", TRAIN_PRECISIONS), ("freeze", FREEZE_MODES),
                          ("normalize", NORMALIZE_MODES), ("augmentation", AUGMENTATIONS), ("schedule", SCHEDULES),
                          ("data_mode", DATA_MODES), ("decode", DECODE_MODES)):
        if getattr(config, name) not in choices and not (name == "augmentation" and config.augmentation is None):
            raise UnknownName(f"{name} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
    if config.model is not None:
        model_builder(config.model)  # an unknown name is an error naming the closest
    if not config.data:
        raise BadInput("no training data given (data=)")
    if not DEVICE_PATTERN.fullmatch(str(config.device)):
        raise BadInput(f"device= must be auto, cpu, cuda or cuda:N, got {config.device!r}")
    if not config.epochs and not config.max_steps:
        raise BadInput("give the run length as epochs or max_steps")
    for name in ("epochs", "max_steps", "batch_size", "eval_batch_size", "train_subset", "test_subset", "image_size",
                 "threads", "num_classes"):
        _at_least(config, name, 1)
    for name in ("val_split", "workers", "checkpoint_every_steps", "tensorboard_every_steps", "lp_epochs"):
        _at_least(config, name, 0)
    for name, low, high in (("lr", 0.0, math.inf), ("weight_decay", 0.0, math.inf), ("momentum", 0.0, 1.0),
                            ("gamma", 0.0, math.inf), ("label_smoothing", 0.0, 1.0), ("warmup_fraction", 0.0, 1.0),
                            ("warmup_until_error", 0.0, 1.0), ("backbone_lr_scale", 0.0, 1.0),
                            ("lr_peak_epoch", 0.0, math.inf)):
        _within(config, name, low, high)
    if config.eval_resize is not None:  # None: the weights' own
        _within(config, "eval_resize", 1.0, math.inf)
    if config.warmup_lr is not None and not config.warmup_lr > 0:
        raise BadInput(f"warmup_lr= must be positive (None: no warm-up), got {config.warmup_lr!r}")
    if not all(0.0 < m <= 1.0 for m in config.milestones):
        raise BadInput(f"milestones= are fractions of the run, in (0, 1], got {config.milestones!r}")
    for name in ("mean", "std"):
        value = getattr(config, name)
        if len(value) != 3 or (name == "std" and min(value) <= 0):
            raise BadInput(f"{name}= must be 3 numbers (R, G, B){', all positive' if name == 'std' else ''}, "
                           f"got {value!r}")
    pretrained_only = [what for given, what in ((config.freeze == "backbone", "freeze='backbone' trains the "
                                                 "classifier alone"),
                                                (config.lp_epochs > 0, "lp_epochs= trains the classifier alone first"),
                                                (config.backbone_lr_scale != 1.0, "backbone_lr_scale= slows the "
                                                 "pretrained layers")) if given]
    if pretrained_only and not config.weights:
        raise BadInput(f"{pretrained_only[0]}, on top of pretrained weights: give weights= (a registry name or a file)")
    if config.lp_epochs and config.freeze == "backbone":
        raise BadInput("lp_epochs= is a linear probe followed by fine-tuning every layer, freeze='backbone' a linear "
                       "probe throughout: give one of them")
    if config.lp_epochs and config.epochs and config.lp_epochs >= config.epochs and not config.max_steps:
        raise BadInput(f"lp_epochs={config.lp_epochs} leaves none of the {config.epochs} epochs to fine-tune: "
                       "give fewer lp_epochs= (or freeze='backbone' for a linear probe alone)")
    if config.backbone_lr_scale == 0:
        raise BadInput("backbone_lr_scale=0 would train the classifier alone with the backbone's BatchNorm "
                       "statistics still moving: use freeze='backbone'")
    if config.decode == "crop":
        if config.data_mode == "memory":
            raise BadInput("decode='crop' decodes each training image per step at the size its crop needs: it "
                           "streams; give data_mode='stream' or 'auto'")
        if config.augmentation not in (None, "random-resized-crop", "scale-crop") or not config.augment:
            raise BadInput("decode='crop' is for random crops (augmentation='random-resized-crop' or 'scale-crop'), "
                           f"got augmentation={config.augmentation!r}{'' if config.augment else ' with augment=False'}")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise MissingExtra("tensorboard=True needs the tensorboard package: pip install 'resnets[tensorboard]'")
    check_components(config)


def _within(config: TrainConfig, name: str, low: float, high: float) -> None:
    """``config.name`` is a number in [``low``, ``high``]."""
    value = getattr(config, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise BadInput(f"{name}= must be a number in [{low:g}, {high:g}], got {value!r}")


def _at_least(config: TrainConfig, name: str, low: int) -> None:
    """``config.name`` is None or an integer >= ``low``."""
    value = getattr(config, name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise BadInput(f"{name}= must be {kind}, got {value!r}")


def check_components(config: TrainConfig) -> None:
    """The modern-training options: choices, ranges, and the extra LAMB and LARS need."""
    for name, choices in (("opt", OPTIMIZERS), ("loss", LOSSES), ("lr_warmup_method", LR_WARMUP_METHODS)):
        if getattr(config, name) not in choices:
            raise UnknownName(f"{name} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
    if config.auto_augment is not None and config.auto_augment not in AUTO_AUGMENT:
        raise UnknownName(f"auto_augment must be one of {', '.join(AUTO_AUGMENT)} (None: off), "
                          f"got {config.auto_augment!r}")
    if config.opt in ("lamb", "lars") and importlib.util.find_spec("timm") is None:
        raise MissingExtra(f"opt={config.opt!r} is timm's optimizer: pip install \"resnets[train]\"")
    if config.bce_target_thresh is not None and config.loss != "bce":
        raise BadInput("bce_target_thresh= applies to loss='bce' only")
    for name, low, high in (("random_erase", 0.0, 1.0), ("distill_alpha", 0.0, 1.0), ("lr_warmup_decay", 0.0, 1.0),
                            ("mixup_alpha", 0.0, math.inf), ("cutmix_alpha", 0.0, math.inf),
                            ("model_ema_decay", 0.0, 1.0)):
        _within(config, name, low, high)
    for name in ("lr_warmup_epochs", "ra_reps", "start_ramp"):
        _at_least(config, name, 0)
    for name in ("model_ema_steps", "ra_magnitude", "augmix_severity", "res_step", "train_crop_size",
                 "val_resize_size", "val_crop_size", "min_res", "max_res", "end_ramp"):
        _at_least(config, name, 1)
    for name in ("clip_grad_norm", "distill_temperature", "bce_target_thresh"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise BadInput(f"{name}= must be a positive number, got {value!r}")
    if config.min_res is None and (config.max_res is not None or config.end_ramp is not None):
        raise BadInput("max_res= and end_ramp= shape progressive resizing, which min_res= turns on")
    if config.normalize == "pixel" and (config.train_crop_size or config.val_crop_size or config.min_res):
        raise BadInput("normalize='pixel' subtracts a per-pixel mean of one size: train_crop_size=, val_crop_size= "
                       "and min_res= need channel normalisation")
