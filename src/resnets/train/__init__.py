"""Training: recipes, the trainer (single process or torchrun/DDP), checkpoints, metrics and plots."""

from .config import RECIPES, TrainConfig, make_config
from .loop import TrainingDiverged, build_model, train

__all__ = ["RECIPES", "TrainConfig", "TrainingDiverged", "build_model", "make_config", "train"]
