"""Which device inference runs on: ``auto``/``cpu``/``cuda``/``cuda:N`` resolved once, with clear errors.

Shared by the CLI (``--device``), :func:`resnets.pipeline.load_inference` and ``resnets bench``, so that
every command understands the same names and refuses a missing GPU the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import BadInput
from .choices import DEVICE_PATTERN


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or ``None``) is ``cuda`` when a GPU is visible, else ``cpu``; a named GPU must exist."""
    name = "auto" if device is None else str(device)
    if not DEVICE_PATTERN.fullmatch(name):
        raise BadInput(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"device {name}: no CUDA GPU is available to torch {torch.__version__} "
                             "(torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise BadInput(f"device {name}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1})")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module that holds neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
