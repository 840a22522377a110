"""Atomic checkpoints: the full training state (``.pt``) and the model weights alone (``.safetensors``).

The ``.pt`` keeps the model weights under ``state_dict`` with the library's (torchvision) names, so
``resnets.create_model(name, weights="run/last.pt")`` loads it like any other weights file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BadInput
from ..atomic import atomic_path


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and ``torch.compile`` wrappers (whose names carry prefixes)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the weights (channels-last tensors are not contiguous)."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Model weights as safetensors, with JSON-encoded ``metadata`` (model name, classes, preprocessing)."""
    from safetensors.torch import save_file

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    _atomic(Path(path), lambda tmp: save_file(state_dict, str(tmp), metadata=meta))


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """The training state (``state_dict``, optimizer, RNG, step, ...) written atomically."""
    _atomic(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training state saved by :func:`save_checkpoint`, read without executing code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInput(f"{path}: cannot read training checkpoint: {e}") from e
