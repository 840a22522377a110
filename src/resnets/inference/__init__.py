"""Fast inference: BatchNorm folding, channels-last, bf16/int8, torch.compile, onnxruntime, OpenVINO, export and benchmarks."""

from .fold import fold_batchnorm
from .optimize import InferenceModel, optimize
from .table import BACKENDS, PRECISIONS

__all__ = ["BACKENDS", "PRECISIONS", "InferenceModel", "fold_batchnorm", "optimize"]
