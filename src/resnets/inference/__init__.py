"""Fast inference: BatchNorm folding, channels-last, bf16/int8, torch.compile, export and benchmarks."""

from .fold import fold_batchnorm
from .optimize import PRECISIONS, InferenceModel, optimize

__all__ = ["PRECISIONS", "InferenceModel", "fold_batchnorm", "optimize"]
