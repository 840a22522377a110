"""Fast inference: BatchNorm folding, channels-last, bf16/int8, torch.compile, onnxruntime, OpenVINO, export and benchmarks."""

from .export import ExportCheck, export_model
from .fold import fold_batchnorm
from .optimize import InferenceModel, optimize
from .table import BACKENDS, PRECISIONS

__all__ = ["BACKENDS", "PRECISIONS", "ExportCheck", "InferenceModel", "export_model", "fold_batchnorm", "optimize"]
