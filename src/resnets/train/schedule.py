"""Learning rate as a pure function of the step, so resuming needs no scheduler object."""

from __future__ import annotations

import math

from ..errors import BadInput, UnknownName
from ..choices import LR_WARMUP_METHODS, SCHEDULES
from .config import TrainConfig


def warmup_factor(epoch: int, warmup_epochs: int, method: str, decay: float) -> float:
    """torchvision's warm-up, stepped per epoch: ``LinearLR(start_factor=decay)`` (``"linear"``) or
    ``ConstantLR(factor=decay)`` (``"constant"``) over ``warmup_epochs``; 1 after them."""
    if epoch >= warmup_epochs:
        return 1.0
    if method == "linear":
        return decay + (1 - decay) * epoch / warmup_epochs
    if method == "constant":
        return decay
    raise UnknownName(f"lr_warmup_method must be one of {', '.join(LR_WARMUP_METHODS)}, got {method!r}")


def triangular(epoch: float, epochs: float, lr: float, peak_epoch: float) -> float:
    """FFCV's ``get_cyclic_lr`` interpolated per step as its ``train_loop`` does: linear from ``1e-4 * lr`` at 0 to
    ``lr`` at ``peak_epoch``, then linear to 0 at ``epochs`` (``np.interp`` over those three points;
    github.com/libffcv/ffcv-imagenet, train_imagenet.py)."""
    if epoch <= peak_epoch:
        return lr * (1e-4 + (1 - 1e-4) * epoch / peak_epoch) if peak_epoch > 0 else lr
    return lr * max(0.0, (epochs - epoch) / (epochs - peak_epoch))


def lr_at(step: int, total_steps: int, config: TrainConfig, warming_up: bool = False,
          steps_per_epoch: int | None = None) -> float:
    """The learning rate for optimisation step ``step`` (0-based) of ``total_steps``.

    With ``lr_warmup_epochs`` (which needs ``steps_per_epoch``) the first epochs are torchvision's warm-up and
    the schedule runs over the rest of the run, as torchvision's ``SequentialLR`` does.
    """
    if warming_up and config.warmup_lr is not None:
        return config.warmup_lr
    if config.schedule == "triangular":
        if steps_per_epoch is None:
            raise BadInput("schedule='triangular' needs the steps per epoch (steps_per_epoch=)")
        return triangular(step / steps_per_epoch, total_steps / steps_per_epoch, config.lr, config.lr_peak_epoch)
    if config.lr_warmup_epochs:
        if steps_per_epoch is None:
            raise BadInput("lr_warmup_epochs= needs the steps per epoch (steps_per_epoch=)")
        warm_steps = config.lr_warmup_epochs * steps_per_epoch
        if step < warm_steps:
            return config.lr * warmup_factor(step // steps_per_epoch, config.lr_warmup_epochs,
                                             config.lr_warmup_method, config.lr_warmup_decay)
        step, total_steps = step - warm_steps, total_steps - warm_steps
    progress = step / max(1, total_steps)
    warm = config.warmup_fraction
    if progress < warm:
        return config.lr * (step + 1) / max(1.0, warm * total_steps)
    if config.schedule == "step":
        return config.lr * config.gamma ** sum(progress >= m for m in config.milestones)
    rest = (progress - warm) / max(1e-12, 1 - warm)
    if config.schedule == "onecycle":
        return config.lr * max(0.0, 1 - rest)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * rest))
    raise UnknownName(f"unknown schedule {config.schedule!r}; choose {', '.join(SCHEDULES)}")
