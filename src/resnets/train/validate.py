"""Every option of a run checked before any work (data, weights), each error naming the argument."""

from __future__ import annotations

import importlib.util

from ..choices import FREEZE_MODES, TRAIN_PRECISIONS
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
