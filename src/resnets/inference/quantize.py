"""Static int8 quantization for x86 CPUs (PT2E with torchao's X86InductorQuantizer).

Activations and weights become int8 (per-channel weights, per-tensor activations with
scales from calibration images); convolutions then run on oneDNN's int8 kernels, which use
AMX or VNNI where the CPU has them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import BadInput, MissingExtra
from ..quiet import quiet_third_party
from .graph import export_dynamic_batch


def _require_torchao():
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as e:
        raise MissingExtra(
            "int8 quantization needs the 'torchao' package: pip install 'resnets[int8]' (or pip install torchao)"
        ) from e
    return prepare_pt2e, convert_pt2e, xiq


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor], example: torch.Tensor) -> torch.fx.GraphModule:
    """An int8 graph of ``model`` (eval mode, BN already folded), calibrated on ``calibration`` batches.

    The result is a reference-quantized FX graph (quantize/dequantize around float ops) that
    ``torch.compile`` with freezing lowers to fused int8 oneDNN kernels.
    """
    with quiet_third_party():  # torchao's import and its annotation of the stem's max-pool warn harmlessly
        prepare_pt2e, convert_pt2e, xiq = _require_torchao()
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(export_dynamic_batch(model, example).module(), quantizer)
    seen = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(batch.to(example.dtype).contiguous(memory_format=torch.channels_last))
            seen += 1
    if not seen:
        raise BadInput("int8 calibration got no batches")
    return convert_pt2e(prepared)
