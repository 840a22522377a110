"""The uncompiled network every backend starts from: a folded, channels-last copy in one precision.

Every backend (torch in :mod:`.optimize`, onnxruntime in :mod:`.ort`, OpenVINO in :mod:`.ov`) builds on
it, so it lives below them.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import BadInput
from ..device import model_device
from .fold import fold_batchnorm, freeze_standardized_convs
from .quantize import quantize_int8
from .table import PRECISIONS, check_device

Precision = Literal["fp32", "bf16", "fp16", "int8"]
# Half precisions convert the weights and activations themselves rather than running under autocast:
# with BatchNorm folded every layer is a conv, a linear or an elementwise op, all safe in half, and
# autocast would re-cast every weight on every call (its cast cache only keeps tensors that require
# grad), an extra kernel and read of the weights per layer.
DTYPES = {name: p.dtype for name, p in PRECISIONS.items()}


def numpy_batch(x: torch.Tensor, engine: str) -> np.ndarray:
    """An NCHW float batch as the contiguous float32 array a CPU engine (onnxruntime, OpenVINO) takes."""
    if x.ndim != 4:
        raise BadInput(f"expected an NCHW batch (4 dims), got shape {tuple(x.shape)}")
    if x.device.type != "cpu":
        raise BadInput(f"the {engine} backend runs on the CPU; the input is on {x.device}")
    return x.detach().to(torch.float32).contiguous().numpy()


def prepare(
    model: nn.Module,
    precision: Precision,
    example: torch.Tensor,
    calibration: Iterable[torch.Tensor] | None = None,
    calibrate_on_example: bool = True,
) -> nn.Module:
    """The uncompiled network of :func:`optimize`: a folded, channels-last copy in ``precision``.

    Takes input already in its dtype and layout; int8 gives a quantized FX graph.
    """
    check_device(precision, model_device(model))
    net = copy.deepcopy(model).eval().requires_grad_(False)
    freeze_standardized_convs(net)
    fold_batchnorm(net)
    net = net.to(dtype=DTYPES[precision], memory_format=torch.channels_last)
    if not PRECISIONS[precision].needs_calibration:
        return net
    calibration = int8_calibration(calibration, example, calibrate_on_example)
    return quantize_int8(net, calibration, example.contiguous(memory_format=torch.channels_last))


def int8_calibration(
    calibration: Iterable[torch.Tensor] | None, example: torch.Tensor, calibrate_on_example: bool
) -> Iterable[torch.Tensor]:
    """The batches int8 calibrates on: ``calibration``, else the example inputs (with a warning).

    Called two levels below :func:`optimize` by both backends, so the warning points at its caller.
    """
    if calibration is not None:
        return calibration
    if not calibrate_on_example:
        raise BadInput("int8 needs calibration images (calibration=) or example_inputs to calibrate on")
    warnings.warn("int8: calibrating on the example inputs; pass calibration= with real images for better "
                  "accuracy", stacklevel=4)
    return [example]
