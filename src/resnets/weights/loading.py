"""Read a checkpoint file into a state dict and build a model around it, safely."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..networks import ResNet
from ..registry import model_builder


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or PyTorch pickle file, never executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable weights file (only tensors are accepted, no code): {e}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    # DataParallel prefixes, and the CIFAR reference code's ``linear`` classifier name.
    renamed = {re.sub(r"^linear\.", "fc.", k.removeprefix("module.")): v for k, v in obj.items()}
    return {k: v for k, v in renamed.items() if isinstance(v, torch.Tensor)}


def create_with_weights(name: str, weights: str | os.PathLike, **kwargs) -> ResNet:
    """Build model ``name`` and load ``weights`` (a local file) into it, strictly."""
    if not os.path.exists(weights):
        raise ValueError(f"weights {str(weights)!r}: pretrained weights by name are not available yet; "
                         "pass the path to a local weights file")
    model = model_builder(name)(**kwargs)
    model.load_state_dict(load_state_dict(weights), strict=True)
    return model
