"""The onnxruntime backend of ``optimize()``: the folded network run by onnxruntime's CPU kernels.

On x86 CPUs onnxruntime's MLAS kernels (blocked NCHWc convolutions with the bias, residual
add and ReLU fused in) run fp32 ResNets faster than eager PyTorch and than inductor; int8
uses its static QDQ quantization (per-channel int8 weights, uint8 activations) calibrated
on real images.  The model is exported with :func:`export.export_onnx` and kept in memory.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import BadInput
from .export import _require_onnx, export_onnx
from .prepare import int8_calibration, numpy_batch, prepare
from .table import PRECISIONS


class OrtModel(nn.Module):
    """Runs an onnxruntime session on ordinary float NCHW torch tensors and returns float32 tensors.

    A drop-in for the module :func:`resnets.optimize` returns with the torch backend.
    """

    def __init__(self, model_bytes: bytes, precision: str) -> None:
        super().__init__()
        self.precision = precision
        self.session = _session(model_bytes)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = numpy_batch(x, "onnxruntime")
        return torch.from_numpy(self.session.run(None, {self.input_name: images})[0])

    def extra_repr(self) -> str:
        return f"precision={self.precision}, backend=onnxruntime"


def _session(model_bytes: bytes):
    """A CPU session with every graph optimisation (NCHWc layout, conv+add+relu fusion, QDQ -> int8 ops), torch's
    thread count (the physical cores), and no spin-waiting between calls: spinning threads steal the time of
    other processes and of the DataLoader workers decoding images.  Each choice measured faster on ResNet-50."""
    ort = _require_onnx()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


class _Batches:
    """onnxruntime's calibration reader protocol (``get_next`` until ``None``) over torch batches."""

    def __init__(self, batches: Iterable[torch.Tensor], input_name: str) -> None:
        self._arrays: Iterator[np.ndarray] = iter(
            [b.detach().to(torch.float32).contiguous().numpy() for b in batches])
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self._arrays, None)
        return None if array is None else {self._input_name: array}


class _NoPreprocessAdvice(logging.Filter):
    """Drops quantize_static's advice to run its shape-inference pre-pass first: on ResNet-50 the
    int8 model ran as fast without it, and it costs seconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _root_log_filter(f: logging.Filter) -> Iterator[None]:
    logging.getLogger().addFilter(f)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(f)


def _quantize(fp32: Path, out: Path, calibration: Iterable[torch.Tensor]) -> None:
    """Static int8 QDQ quantization of the ONNX file ``fp32`` into ``out``, calibrated on ``calibration``.

    uint8 activations with int8 per-channel weights: MLAS's fast VNNI/AMX path (int8 activations ran
    ResNet-50 at under a third of the speed here).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    batches = list(calibration)
    if not batches:
        raise BadInput("int8 calibration got no batches")
    with _root_log_filter(_NoPreprocessAdvice()):
        quantize_static(fp32, out, _Batches(batches, "images"), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def build(model: nn.Module, precision: str, example: torch.Tensor,
          calibration: Iterable[torch.Tensor] | None = None, calibrate_on_example: bool = True) -> OrtModel:
    """``optimize(model, precision, backend="onnxruntime")``: an :class:`OrtModel` of the folded ``model``.

    ``example`` gives the input's shape (the batch size stays dynamic); int8 calibrates on
    ``calibration``, else on ``example`` with a warning, as the torch backend does.
    """
    _require_onnx()
    net = prepare(model, "fp32", example)
    quantized = PRECISIONS[precision].needs_calibration
    if quantized:
        calibration = int8_calibration(calibration, example, calibrate_on_example)
    with tempfile.TemporaryDirectory(prefix="resnets-ort-") as tmp:
        path = Path(tmp) / "model.onnx"
        # Only the shape matters; a batch of 2, since torch.export bakes a batch of 1 into the graph.
        export_onnx(net, path, torch.zeros(2, *example.shape[1:]))
        if quantized:
            _quantize(path, Path(tmp) / "int8.onnx", calibration)
            path = Path(tmp) / "int8.onnx"
        return OrtModel(path.read_bytes(), precision)


def describe() -> dict[str, str]:
    """The engine's versions (for benchmark reports)."""
    return {"onnxruntime": _require_onnx().__version__}
