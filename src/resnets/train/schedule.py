"""Learning rate as a pure function of the step, so resuming needs no scheduler object."""

from __future__ import annotations

import math

from ..choices import SCHEDULES
from .config import TrainConfig


def lr_at(step: int, total_steps: int, config: TrainConfig, warming_up: bool = False) -> float:
    """The learning rate for optimisation step ``step`` (0-based) of ``total_steps``."""
    if warming_up and config.warmup_lr is not None:
        return config.warmup_lr
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
    raise ValueError(f"unknown schedule {config.schedule!r}; choose {', '.join(SCHEDULES)}")
