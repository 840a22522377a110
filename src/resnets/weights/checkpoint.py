"""Read any supported weights file into a state dict, and work out which network it belongs to.

Formats are told apart by their first bytes (HDF5 signature, zip/pickle, safetensors header),
falling back on the suffix.  PyTorch files are unpickled with ``weights_only=True``: a file that
would need to run code is refused, never executed.  A state dict saved from timm's ResNetV2 / BiT
(``stem.conv``, ``stages.*.blocks.*``, ``head.fc``) is renamed to ours (:mod:`.timm_keys`); timm's
resnet.py nets already use our names.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import BadWeights
from ..registry import list_models
from .entry import FileFormat, WeightsEntry, entry_from_metadata
from .timm_keys import from_timm_resnetv2, is_timm_resnetv2, timm_resnetv2_name

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SUFFIXES: dict[str, FileFormat] = {
    ".h5": "keras_h5", ".hdf5": "keras_h5", ".keras": "keras_h5", ".safetensors": "safetensors",
    ".pth": "torch", ".pt": "torch", ".th": "torch", ".tar": "torch", ".bin": "torch", ".ckpt": "torch",
}


@dataclass
class Checkpoint:
    """A file's tensors (resnets/torchvision names) and what the file says about its network."""

    state_dict: dict[str, torch.Tensor]
    file_format: FileFormat
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    entry: WeightsEntry | None = None  # the entry a safetensors file written by this package carries
    layer_names: dict[str, str] = field(default_factory=dict)  # module -> the file's own layer name (Keras)


def detect_format(path: str | os.PathLike) -> FileFormat:
    """``"keras_h5"``, ``"safetensors"`` or ``"torch"``, from the file's first bytes or else its suffix."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(HDF5_SIGNATURE):
        return "keras_h5"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip, or a Keras 3 .keras archive
        try:
            with zipfile.ZipFile(path) as z:
                return "keras_h5" if "model.weights.h5" in z.namelist() else "torch"
        except (zipfile.BadZipFile, ValueError) as e:  # ValueError: e.g. a damaged UTF-8 member name
            raise BadWeights(f"{path}: damaged weights file (truncated download?): {e}") from None
    # safetensors before pickle: its header length is little-endian, so its first byte can be 0x80 too
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return "torch"
    try:
        return SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise BadWeights(
            f"{path}: unrecognised weights format; expected a PyTorch (.pth/.pt/.th), "
            "Keras HDF5 (.h5) or .safetensors file"
        ) from None


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BadWeights(
            f"{path}: refused to load: the file holds Python objects other than tensors, and unpickling "
            f"them could run arbitrary code (torch.load weights_only=True): {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:
        raise BadWeights(f"{path}: not a readable PyTorch weights file: {e}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BadWeights(f"{path}: expected a state dict, found {type(obj).__name__}")
    # DataParallel prefixes, and the CIFAR reference code's ``linear`` classifier name.
    renamed = {re.sub(r"^linear\.", "fc.", k.removeprefix("module.")): v for k, v in obj.items()}
    return {k: v for k, v in renamed.items() if isinstance(v, torch.Tensor)}


def _load_safetensors(path: Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], WeightsEntry | None]:
    """The tensors (none unless ``tensors``: the header alone is read) and the recorded entry."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except SafetensorError as e:
        raise BadWeights(f"{path}: not a readable safetensors file: {e}") from e
    return state_dict, entry_from_metadata(meta, path)


def infer_model_kwargs(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The architecture options a state dict pins down: classifier size, conv biases, shortcut type."""
    kwargs: dict[str, Any] = {"num_classes": int(state_dict["fc.weight"].shape[0]) if "fc.weight" in state_dict else 0}
    if "conv1.bias" in state_dict:
        kwargs["conv_bias"] = True
    if any(re.match(r"layer\d+\.[1-9]\d*\.downsample\.", k) for k in state_dict):
        kwargs["shortcut"] = "C"  # projections on identity blocks too
    elif "layer2.0.conv1.weight" in state_dict and not any(k.startswith("layer2.0.downsample.") for k in state_dict):
        kwargs["shortcut"] = "A"  # shape changes without a projection: zero-padding shortcut
    return kwargs


def infer_model_name(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The registered network whose depth the state dict has (``resnet50``, ``resnet20``...), if any."""
    blocks = {m.group(1, 2) for k in state_dict if (m := re.match(r"(layer\d+)\.(\d+)\.", k))}
    if not blocks:
        return None
    layers_per_block = 3 if "layer1.0.conv3.weight" in state_dict else 2
    name = f"resnet{len(blocks) * layers_per_block + 2}"
    return name if name in list_models() else None


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise BadWeights(f"{path}: empty file (0 bytes): an interrupted download or copy?")
    return path


def read_entry(path: str | os.PathLike) -> WeightsEntry | None:
    """The entry a weights file records of itself, without reading its tensors: a safetensors file's metadata
    (the header alone); None for a file that records none (the other formats never do)."""
    path = _existing(path)
    return _load_safetensors(path, tensors=False)[1] if detect_format(path) == "safetensors" else None


def read_checkpoint(path: str | os.PathLike, fold_bias: bool = True) -> Checkpoint:
    """Read a ``.pth/.pt/.th``, Keras ``.h5`` or ``.safetensors`` file without running code from it.

    ``fold_bias`` (Keras files only) folds the conv biases into the following batch norms.
    """
    path = _existing(path)
    fmt = detect_format(path)
    if fmt == "keras_h5":
        from .keras_h5 import read_keras_h5

        ck = read_keras_h5(path, fold_bias=fold_bias)
        return Checkpoint(ck.state_dict, fmt, dict(ck.model_kwargs), ck.model_name, layer_names=ck.layer_names)
    entry = None
    if fmt == "safetensors":
        state_dict, entry = _load_safetensors(path)
    else:
        state_dict = _load_torch(path)
    timm_v2 = is_timm_resnetv2(state_dict)
    if timm_v2:
        try:
            state_dict = from_timm_resnetv2(state_dict)
        except ValueError as e:
            raise BadWeights(f"{path}: {e}") from None
    kwargs = infer_model_kwargs(state_dict)
    if entry is not None:
        kwargs.update(entry.model_kwargs)
        model = entry.model
    else:
        model = timm_resnetv2_name(state_dict) if timm_v2 else infer_model_name(state_dict)
    return Checkpoint(state_dict, fmt, kwargs, model, entry)
