"""The arithmetic a training run computes in: ``auto`` made concrete for the device, and its autocast dtype."""

from __future__ import annotations

import torch

from ..errors import BadInput
from ..cpu import cpu_info

#: The autocast dtype of each concrete training precision (None: plain fp32).
AUTOCAST_DTYPE = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision``, with ``"auto"`` made bf16 where ``device`` computes bf16 natively (a CUDA GPU that supports it,
    a CPU with AVX-512 BF16 or AMX) and fp32 elsewhere: emulated bf16 trains several times slower than fp32.

    fp16 off a CUDA GPU is refused: without half-precision kernels it is far slower than fp32."""
    if precision == "fp16" and device.type != "cuda":
        raise BadInput(f"precision='fp16' is for CUDA GPUs; on the {device.type} it runs about 100x "
                         "slower than fp32 (no half-precision kernels): use precision='bf16' or precision='fp32'")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_info().native_bf16 else "fp32"
