"""``optimize()``: an inference-ready copy of a model for fp32, bf16 or int8 on CPU (and GPU).

The steps, each measured to pay on this package's ResNets (see ``benchmarks/``): eval mode,
BatchNorm folded into the convolutions, channels-last memory layout (oneDNN's native
layout, no reorders between layers), then per precision bf16 weights and activations (AMX
on recent Xeons) or static int8 (PT2E), and ``torch.compile`` with freezing, which fuses
the elementwise tails (bias, residual add, ReLU) into the convolutions and pre-packs the
weights.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from .fold import fold_batchnorm
from .quantize import quantize_int8

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}

# Whether torch.compile pays by default, chosen from benchmarks/results (ResNet-50, batch 16):
# it does for every precision, and int8 needs it (the quantized graph only becomes int8
# kernels when inductor lowers it).
COMPILE_BY_DEFAULT = {"fp32": True, "bf16": True, "int8": True}


class InferenceModel(nn.Module):
    """Runs an optimised network on ordinary float NCHW input and returns float32 output.

    The input is converted to the network's layout (channels-last) and dtype, the output
    back to a contiguous float32 tensor, so callers need not know how the model was optimised.
    """

    def __init__(self, net: nn.Module, precision: str, compiled: bool) -> None:
        super().__init__()
        self.net = net
        self.precision = precision
        self.compiled = compiled
        self.dtype = DTYPES[precision]

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected an NCHW batch (4 dims), got shape {tuple(x.shape)}")
        x = x.to(dtype=self.dtype, memory_format=torch.channels_last)
        if not self.compiled:
            return self.net(x).to(torch.float32).contiguous()
        # Compilation happens lazily, inside this call.  Freezing must be set in the global inductor
        # config (torch.compile's options= does not reach the constant folding that pre-packs int8 weights).
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.net(x).to(torch.float32).contiguous()

    def extra_repr(self) -> str:
        return f"precision={self.precision}, compiled={self.compiled}"


def _example_batch(model: nn.Module, example_inputs: torch.Tensor | tuple | None) -> torch.Tensor:
    if isinstance(example_inputs, (tuple, list)):
        example_inputs = example_inputs[0]
    if example_inputs is not None:
        return example_inputs.detach()
    size = getattr(model, "input_size", (3, 224, 224))
    return torch.zeros(2, *size)


def optimize(
    model: nn.Module,
    precision: Precision = "fp32",
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
    compile: bool | None = None,
) -> nn.Module:
    """An inference-ready copy of ``model`` (the original is untouched).

    ``precision``: ``"fp32"`` (exact up to rounding), ``"bf16"`` (weights and activations)
    or ``"int8"`` (static quantization, calibrated on ``calibration``, an iterable of NCHW
    float batches preprocessed like real inputs; without it on ``example_inputs``, with a
    warning).  ``compile``: use ``torch.compile`` (inductor, freezing); ``None`` picks the
    measured default.  A compiled model compiles on its first call and again, once, with a
    dynamic batch size when it first sees another batch size.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    compile = COMPILE_BY_DEFAULT[precision] if compile is None else compile
    if precision == "int8" and not compile:
        raise ValueError("int8 needs compile=True: only inductor lowers the quantized graph to int8 kernels")
    net = prepare(model, precision, _example_batch(model, example_inputs), calibration,
                  calibrate_on_example=example_inputs is not None)
    if compile:
        net = torch.compile(net)
    return InferenceModel(net, precision, bool(compile))


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
    net = copy.deepcopy(model).eval().requires_grad_(False)
    fold_batchnorm(net)
    net = net.to(dtype=DTYPES[precision], memory_format=torch.channels_last)
    if precision != "int8":
        return net
    device = next(net.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 quantization targets x86 CPUs; the model is on {device} (use bf16 there)")
    if calibration is None:
        if not calibrate_on_example:
            raise ValueError("int8 needs calibration images (calibration=) or example_inputs to calibrate on")
        warnings.warn("int8: calibrating on the example inputs; pass calibration= with real images for better "
                      "accuracy", stacklevel=3)
        calibration = [example]
    return quantize_int8(net, calibration, example.contiguous(memory_format=torch.channels_last))
