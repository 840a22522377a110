"""Training configuration: one dataclass, and the named recipes that fill it in."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, UnknownName
from ..preprocess import CIFAR10, IMAGENET_TORCH
from ..weights.entry import WeightsEntry
from ..weights.loading import ALIASES

# The normalisation of the CIFAR-10 reference checkpoints, so that models trained here share their
# preprocessing (and ``resnets.preprocess.CIFAR10`` feeds them correctly).
CIFAR_MEAN, CIFAR_STD = CIFAR10.mean, CIFAR10.std
# torchvision's references/classification (https://github.com/pytorch/vision/tree/main/references/classification):
# the V1 command (every default: 90 epochs, 8 GPUs x batch 32, lr 0.1 / 10 every 30 epochs, SGD momentum 0.9, weight
# decay 1e-4, RandomResizedCrop 224 + flip, evaluation resize 256 crop 224, fp32: no --amp). The ImageNet recipes
# crop from the whole image as their sources do (decode="crop", streaming).
_TV_V1 = dict(
    epochs=90, max_steps=None, batch_size=256, lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
    schedule="step", milestones=(1 / 3, 2 / 3), gamma=0.1, label_smoothing=0.0, normalize="channel",
    mean=IMAGENET_TORCH.mean, std=IMAGENET_TORCH.std, augmentation="random-resized-crop", eval_resize=256 / 224,
    precision="fp32", decode="crop",
)
# "ResNet strikes back" (Wightman, Touvron, Jegou 2021, https://arxiv.org/abs/2110.00476, Table 1), as timm's
# train.py runs it: LAMB, binary cross-entropy, cosine after 5 warm-up epochs, no weight decay on norms and biases
# (timm's param_groups_weight_decay), RandomResizedCrop + flip + RandAugment, MixUp/CutMix, global batch 2048,
# test at 224 with crop_pct 0.95 (timm: resize floor(224 / 0.95) = 235), mixed precision.
_RSB = dict(
    batch_size=2048, opt="lamb", loss="bce", bce_target_thresh=0.2, schedule="cosine", lr_warmup_epochs=5,
    lr_warmup_method="linear", norm_weight_decay=0.0, bias_weight_decay=0.0, label_smoothing=0.0,
    normalize="channel", mean=IMAGENET_TORCH.mean, std=IMAGENET_TORCH.std, augmentation="random-resized-crop",
    auto_augment="ra", cutmix_alpha=1.0, val_crop_size=224, val_resize_size=235, precision="auto", max_steps=None,
    decode="crop",
)


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run directory."""

    model: str | None = "resnet20"  # None: the network the weights are for (filled in when the run reads them)
    data: str = ""
    out: str | None = "runs/resnet20"  # None: runs/MODEL-RECIPE once the model is known
    recipe: str = "fast-cifar"
    # schedule: ``epochs`` or ``max_steps`` (iterations, as in the paper) decides the length
    epochs: int | None = 10
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "step"  # "step" | "onecycle" | "cosine" | "triangular" (FFCV's)
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the run (step schedule)
    gamma: float = 0.1
    warmup_fraction: float = 0.0  # linear warm-up share (onecycle/cosine)
    lr_peak_epoch: float = 2.0  # triangular: the epoch the learning rate peaks at (FFCV's lr_peak_epoch)
    warmup_lr: float | None = None  # constant lr until the training error falls below warmup_until_error
    warmup_until_error: float = 0.8
    label_smoothing: float = 0.0
    # data
    # "channel" (mean/std) | "pixel" (per-pixel mean subtraction, the paper) | "weights" (the pretrained weights' own
    # scale, channel order, mean and std; "channel" without weights)
    normalize: str = "channel"
    mean: tuple[float, float, float] = CIFAR_MEAN
    std: tuple[float, float, float] = CIFAR_STD
    augment: bool = True  # False: no random augmentation whatever the recipe's
    # "pad-crop" | "random-resized-crop" | "none": the recipe's (train/augment.py); None: as the weights were trained
    # (pad-crop for weights evaluated uncropped, as CIFAR's; random-resized-crop for a resize-then-crop recipe)
    augmentation: str | None = "pad-crop"
    # shorter side before the evaluation centre crop, as a multiple of the image size; None: the weights' own ratio
    eval_resize: float | None = 1.0
    val_split: int = 0  # hold out this many training images and evaluate on them instead of the test set
    train_subset: int | None = None
    test_subset: int | None = None
    image_size: int | None = None  # square training size; None: the weights' crop size, else the model's own
    cache_dir: str | None = None
    data_mode: str = "auto"  # "memory" (decoded once, cached) | "stream" (image folders, decoded per step) | "auto"
    workers: int = 2  # DataLoader worker processes when streaming
    decode: str = "resize"  # "resize" | "crop" (streams; each training image decoded at the size its crop needs)
    # model
    weights: str | None = None
    num_classes: int | None = None
    freeze: str = "none"  # "none" | "backbone" (train the head only) | "bn" (BN statistics frozen)
    lp_epochs: int = 0  # linear probe first: the head alone (backbone and BN statistics frozen) for these epochs
    backbone_lr_scale: float = 1.0  # the backbone's learning rate as a share of the head's
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # modern training, named as torchvision's references/classification/train.py names them; off by default
    opt: str = "sgd"  # "sgd" | "adamw" | "lamb" | "lars" (lamb, lars: timm's, pip install "resnets[train]")
    norm_weight_decay: float | None = None  # weight decay of normalisation layers; None: weight_decay
    bias_weight_decay: float | None = None  # weight decay of biases; None: weight_decay
    clip_grad_norm: float | None = None  # clip the gradients' global norm to this
    lr_warmup_epochs: int = 0  # torchvision's warm-up: lr * lr_warmup_decay rising (linear) or held (constant)
    lr_warmup_method: str = "constant"  # "constant" | "linear"
    lr_warmup_decay: float = 0.01
    loss: str = "ce"  # "ce" | "bce" (timm's BinaryCrossEntropy)
    bce_target_thresh: float | None = None  # bce: targets above this become 1, the rest 0 (timm's)
    mixup_alpha: float = 0.0  # MixUp's Beta(alpha, alpha); 0: off
    cutmix_alpha: float = 0.0  # CutMix's; with both, one of the two per batch
    auto_augment: str | None = None  # "ta_wide" | "ra" | "augmix" | "imagenet" | "cifar10" | "svhn" (AutoAugment's)
    ra_magnitude: int = 9  # RandAugment's magnitude
    augmix_severity: int = 3  # AugMix's severity
    random_erase: float = 0.0  # random erasing probability
    ra_reps: int = 0  # repeated augmentation: each image this many times per epoch (torchvision's RASampler); 0: off
    model_ema: bool = False  # evaluate and save an exponential moving average of the weights
    model_ema_steps: int = 32  # update the average every this many steps
    model_ema_decay: float = 0.99998  # its decay, adjusted to the batch size, steps and epochs as torchvision does
    train_crop_size: int | None = None  # side of the training crops; None: image_size
    val_resize_size: int | None = None  # evaluation shorter side; None: val_crop_size * eval_resize
    val_crop_size: int | None = None  # evaluation centre crop; None: image_size
    min_res: int | None = None  # progressive resizing (FFCV's): the training side from min_res ...
    max_res: int | None = None  # ... to max_res (None: train_crop_size) ...
    start_ramp: int = 0  # ... rising linearly from this epoch (0-based) ...
    end_ramp: int | None = None  # ... to this one (None: the last), in multiples of res_step
    res_step: int = 32
    teacher: str | None = None  # distil from these weights (a file or catalogue name)
    distill_alpha: float = 0.5  # share of the label loss; the rest is the teacher's soft-label loss
    distill_temperature: float = 1.0
    # execution
    precision: str = "fp32"  # "auto" (bf16 where the device has it natively, else fp32) | "fp32" | "bf16" | "fp16"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    deterministic: bool = False
    eval_batch_size: int = 500
    checkpoint_every_steps: int = 0
    progress: bool = True
    tensorboard: bool = False  # also write RUN_DIR/tb (rank 0), needs the tensorboard package
    tensorboard_every_steps: int = 50  # train loss to TensorBoard every N steps
    resume: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UnknownName(f"unknown training option(s): {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


RECIPES: dict[str, dict[str, Any]] = {
    # Section 4.2: SGD, batch 128, lr 0.1 / 10 at 32k and 48k iterations, stop at 64k,
    # weight decay 1e-4, momentum 0.9, per-pixel mean subtraction, pad-4 crop + flip.
    "paper-cifar": dict(
        epochs=None, max_steps=64_000, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
        schedule="step", milestones=(0.5, 0.75), gamma=0.1, normalize="pixel", label_smoothing=0.0,
        precision="fp32", augmentation="pad-crop", eval_resize=1.0,
    ),
    # A short modern schedule for CPU budgets: one-cycle (linear warm-up, linear decay to 0), Nesterov,
    # label smoothing, weight decay 5e-4, bf16 where the device computes it natively (else fp32: emulated bf16 is
    # slower); sized for ResNet-20 on a CPU (its times: README).
    "fast-cifar": dict(
        epochs=30, max_steps=None, batch_size=128, lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
        schedule="onecycle", warmup_fraction=0.15, label_smoothing=0.1, normalize="channel", precision="auto",
        augmentation="pad-crop", eval_resize=1.0,
    ),
    # fast-cifar's schedule with the modern components, for longer budgets (issue 31's proof runs): random
    # erasing (Zhong et al. 2020: -0.5 points of error for ResNet-20), no weight decay on normalisation layers, and
    # the weights' EMA evaluated and saved (decay 0.9995: on CIFAR-10's 50k images the same share of the run as
    # torchvision's 0.99998 on ImageNet's 1.28M).
    "cifar-modern": dict(
        epochs=60, max_steps=None, batch_size=128, lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
        norm_weight_decay=0.0, schedule="onecycle", warmup_fraction=0.15, label_smoothing=0.1, normalize="channel",
        precision="auto", augmentation="pad-crop", eval_resize=1.0, random_erase=0.25, model_ema=True,
        model_ema_decay=0.9995,
    ),
    # From pretrained weights to a new class count, with the input the weights were trained on: their
    # normalisation, size, evaluation resize and the augmentation that goes with it (for_weights).
    "finetune": dict(
        epochs=5, max_steps=None, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4,
        schedule="cosine", warmup_fraction=0.0, label_smoothing=0.0, normalize="weights",
        augmentation=None, eval_resize=None,
    ),
    # He et al. 2015 (https://arxiv.org/abs/1512.03385), section 3.4: SGD momentum 0.9, batch 256, lr 0.1 divided by
    # 10 when the error plateaus (at 30 and 60 of 90 epochs, as torchvision's V1 reproduction), weight decay 1e-4,
    # scale augmentation (shorter side uniform in [256, 480], a random 224 crop, flip). Not here: the per-pixel
    # mean (channel mean/std instead) and AlexNet's PCA colour augmentation. Its 10-crop test: resnets eval --ten-crop.
    "paper-imagenet": {**_TV_V1, "augmentation": "scale-crop"},
    "tv-v1": _TV_V1,
    # torchvision's V2 (https://github.com/pytorch/vision/issues/3995#new-recipe; the command in
    # references/classification/README.md): 8 GPUs x batch 128, lr 0.5, cosine after 5 linear warm-up epochs (from
    # lr x 0.01), label smoothing 0.1, MixUp 0.2, CutMix 1.0, TrivialAugmentWide, random erasing 0.1, EMA every 32
    # steps at 0.99998, RASampler x4, weight decay 2e-5 and none on norms, train crop 176, evaluation 232 / 224.
    "tv-v2": {**_TV_V1, "epochs": 600, "batch_size": 1024, "lr": 0.5, "weight_decay": 2e-5, "norm_weight_decay": 0.0,
              "schedule": "cosine", "lr_warmup_epochs": 5, "lr_warmup_method": "linear", "lr_warmup_decay": 0.01,
              "label_smoothing": 0.1, "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "auto_augment": "ta_wide",
              "random_erase": 0.1, "model_ema": True, "model_ema_steps": 32, "model_ema_decay": 0.99998,
              "ra_reps": 4, "train_crop_size": 176, "val_resize_size": 232, "val_crop_size": 224},
    # ResNet strikes back, Table 1: A1 600 epochs at 224, lr 5e-3, wd 0.01, RandAugment 7/0.5, MixUp 0.2, stochastic
    # depth 0.05, repeated augmentation (3, DeiT's); A2 300 epochs, wd 0.02, MixUp 0.1; A3 100 epochs at 160, lr 8e-3,
    # wd 0.02, RandAugment 6/0.5, MixUp 0.1, no stochastic depth or repeated augmentation. timm's m7/mstd0.5 is
    # RandAugment(num_ops=2, magnitude=7) with the magnitude drawn from N(7, 0.5) per op; torchvision's RandAugment
    # (auto_augment="ra") keeps it fixed at ra_magnitude. Not read from the table itself (only its abstract was
    # reachable when this was written): the MixUp alphas, the 3 repetitions, bce_target_thresh 0.2 and the warm-up's
    # start (lr x 0.01, torchvision's default; timm's warmup_lr differs) are as recalled, the rest as the issue quotes.
    "rsb-a1": {**_RSB, "epochs": 600, "lr": 5e-3, "weight_decay": 0.01, "ra_magnitude": 7, "mixup_alpha": 0.2,
               "ra_reps": 3, "model_kwargs": {"drop_path_rate": 0.05}, "train_crop_size": 224},
    "rsb-a2": {**_RSB, "epochs": 300, "lr": 5e-3, "weight_decay": 0.02, "ra_magnitude": 7, "mixup_alpha": 0.1,
               "ra_reps": 3, "model_kwargs": {"drop_path_rate": 0.05}, "train_crop_size": 224},
    "rsb-a3": {**_RSB, "epochs": 100, "lr": 8e-3, "weight_decay": 0.02, "ra_magnitude": 6, "mixup_alpha": 0.1,
               "ra_reps": 0, "train_crop_size": 160},
    # FFCV's ResNet-50 (https://github.com/libffcv/ffcv-imagenet, rn50_configs/rn50_{16..88}_epochs.yaml and
    # train_imagenet.py): 8 GPUs x batch 512 (global 4096, issue #4), lr 1.7, the triangular schedule peaking at
    # epoch 2, SGD momentum 0.9, weight decay 1e-4 and none on BatchNorm, label smoothing 0.1, BlurPool, progressive
    # resizing 160 -> 192 (ramp epochs: ffcv_ramp), RandomResizedCrop + flip, test at 256 (a centre crop of 224/256
    # of the shorter side), mixed precision. Not here: its test-time flip averaging (resnets eval --tta flip).
    "ffcv-rn50": dict(
        epochs=88, max_steps=None, batch_size=4096, lr=1.7, momentum=0.9, weight_decay=1e-4, norm_weight_decay=0.0,
        schedule="triangular", lr_peak_epoch=2.0, label_smoothing=0.1, normalize="channel",
        mean=IMAGENET_TORCH.mean, std=IMAGENET_TORCH.std, augmentation="random-resized-crop", eval_resize=256 / 224,
        min_res=160, max_res=192, res_step=32, val_crop_size=256, val_resize_size=293,
        model_kwargs={"aa": "blur"}, precision="auto", decode="crop",
    ),
}
#: How a recipe's learning rate follows a global batch other than its own: "linear" (Goyal et al. 2017, as
#: torchvision's and FFCV's SGD recipes scale) or "sqrt" (timm's train.py for LAMB: lr_base_scale "sqrt" for
#: adaptive optimizers). The CIFAR recipes keep their lr whatever the batch.
LR_SCALING: dict[str, str] = {"paper-imagenet": "linear", "tv-v1": "linear", "tv-v2": "linear", "rsb-a1": "sqrt",
                              "rsb-a2": "sqrt", "rsb-a3": "sqrt", "ffcv-rn50": "linear"}


def scaled_lr(recipe: str, batch_size: int) -> float:
    """``recipe``'s learning rate for a global batch of ``batch_size`` (:data:`LR_SCALING`)."""
    base = RECIPES[recipe]
    ratio = batch_size / base["batch_size"]
    return base["lr"] * (ratio ** 0.5 if LR_SCALING.get(recipe) == "sqrt" else ratio if recipe in LR_SCALING else 1)


def ffcv_ramp(epochs: int) -> tuple[int, int]:
    """FFCV's progressive-resizing ramp ``(start_ramp, end_ramp)`` for a run of ``epochs``: its six rn50 configs
    (16, 24, 32, 40, 56, 88 epochs) all have ``end_ramp = epochs - epochs // 8 - 1`` and
    ``start_ramp = end_ramp - epochs // 8``."""
    end = epochs - epochs // 8 - 1
    return end - epochs // 8, end


def make_config(recipe: str = "fast-cifar", **overrides: Any) -> TrainConfig:
    """A config from a named recipe, with ``overrides`` (``None`` values are ignored) on top."""
    if recipe not in RECIPES:
        raise UnknownName(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    values: dict[str, Any] = {"recipe": recipe, **copy.deepcopy(RECIPES[recipe])}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "model" not in given and given.get("weights") and str(given["weights"]).lower() not in ("none", *ALIASES):
        given["model"] = None  # the network the weights are for, as every other command takes it: read with them
    if "epochs" in given and "max_steps" not in given:
        values["max_steps"] = None  # --epochs replaces a recipe's length in iterations (paper-cifar's 64k)
    if "batch_size" in given and "lr" not in given:
        values["lr"] = scaled_lr(recipe, given["batch_size"])
    values.update(given)
    if recipe == "ffcv-rn50" and values.get("epochs"):
        ramp = dict(zip(("start_ramp", "end_ramp"), ffcv_ramp(values["epochs"])))
        values |= {k: v for k, v in ramp.items() if k not in given}  # the ramp stretched with the run
    values |= _model_defaults(values.get("model", TrainConfig.model), recipe, values, overrides)
    if str(values.get("weights")).lower() == "none":
        values["weights"] = None  # random weights, as --weights none everywhere
    if recipe == "finetune" and not values.get("weights"):
        warnings.warn("the finetune recipe is meant to start from pretrained weights (weights=); "
                      "training from random weights", stacklevel=2)
    return TrainConfig.from_dict(values)


def for_weights(config: TrainConfig, weights: WeightsEntry | None) -> TrainConfig:
    """``config`` with what it left to its starting weights taken from what they say of themselves (``weights``;
    None for a fresh model: its kind's usual input): the network (``model=None``), the image size (None: their
    crop size), and the input geometry (``augmentation``/``eval_resize`` None, the finetune recipe's): a
    32-pixel CIFAR net is fine-tuned on 32-pixel images with pad-and-crop, an ImageNet net at its crop size with
    RandomResizedCrop and its own evaluation resize, never one recipe's geometry for both."""
    values: dict[str, Any] = {}
    if config.model is None and weights is not None:
        values = {"model": weights.model,
                  **_model_defaults(weights.model, config.recipe, dataclasses.asdict(config), {})}
    model = values.get("model", config.model)
    if weights is not None or config.augmentation is None or config.eval_resize is None:
        native = default_image_size(model)
        own = weights.preprocessing if weights is not None else CIFAR10 if native <= 64 else IMAGENET_TORCH
        crop = own.crop_size or native
        resize = own.resize_size or crop
        values["image_size"] = config.image_size or crop
        if config.eval_resize is None:
            values["eval_resize"] = resize / crop
        if config.augmentation is None:
            values["augmentation"] = "random-resized-crop" if resize > crop else "pad-crop"
    return dataclasses.replace(config, **values)


def _model_defaults(model: str | None, recipe: str, values: dict[str, Any], overrides: dict[str, Any]
                    ) -> dict[str, Any]:
    """What depends on the network: the default run folder, and paper-cifar's warm-up of the 110-layer nets."""
    if model is None:
        return {"out": values.get("out")}
    defaults = {"out": values.get("out") or str(Path("runs") / f"{model}-{recipe}")}
    unset = values.get("warmup_lr") is None and "warmup_lr" not in overrides  # warmup_lr=None: asked for none
    if recipe == "paper-cifar" and _depth(model) >= 110 and unset:
        defaults["warmup_lr"] = 0.01  # "we use 0.01 to warm up the training until the training error is below 80%"
    return defaults


def run_config(recipe: str | None = None, **options: Any) -> TrainConfig:
    """The config of a run from the options of ``resnets train`` or ``resnets.train(...)`` (``None`` = not given).

    ``resume`` with an ``out`` folder holding a run continues that run's saved ``config.json``, the given
    options on top; otherwise the recipe's values (default fast-cifar) with the options on top.
    """
    given = {k: v for k, v in options.items() if v is not None}
    if recipe is not None:
        given["recipe"] = recipe
    saved = Path(given.get("out", "")) / "config.json"
    if given.get("resume") and "out" in given:
        if saved.is_file():
            return TrainConfig.from_dict({**TrainConfig.load(saved).__dict__, **given})
        if not given.get("data"):
            raise BadInput(f"resume: {saved} not found, so there is no run to continue in {given['out']} "
                             "(give data= to start one there)")
    if not given.get("data"):
        raise BadInput("data= is required, unless resuming a run (resume=True, out=RUN_DIR)")
    return make_config(given.pop("recipe", TrainConfig.recipe), **given)


def default_image_size(model: str) -> int:
    """The input size a registry model is designed for (32 for the CIFAR nets, 224 for the ImageNet nets)."""
    import torch

    from ..registry import model_builder

    with torch.device("meta"):  # no memory, no init cost
        return model_builder(model)().input_size[-1]


def _depth(model: str) -> int:
    """The depth in a registry name: 110 for resnet110 and resnet110v2, 28 for wide_resnet28_10."""
    found = re.match(r"[a-z_]*?(\d+)", model)
    return int(found.group(1)) if found else 0
