"""Training: recipes, the trainer (single process or torchrun/DDP), checkpoints, metrics and plots."""

from .config import RECIPES, TrainConfig, make_config
from .loop import train
from .model import build_model
from .trainer import TrainingDiverged

__all__ = ["RECIPES", "TrainConfig", "TrainingDiverged", "build_model", "make_config", "train"]
