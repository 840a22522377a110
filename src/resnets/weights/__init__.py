"""Pretrained weights: the registry of published files, a verified download cache, and safe loading.

``resnets.create_model("resnet50", weights="imagenet")`` goes through :func:`create_with_weights`.
"""

from .checkpoint import Checkpoint, detect_format, read_checkpoint
from .convert import convert_to_safetensors
from .entry import META_KEY, WeightsEntry, save_safetensors
from .download import (
    ChecksumError, DownloadError, OfflineError, cache_dir, cached_file, cached_path, is_cached,
)
from .loading import create_with_weights, resolve_weights
from .registry import WEIGHTS, get_weights, list_weights

__all__ = [
    "META_KEY", "WEIGHTS", "Checkpoint", "ChecksumError", "DownloadError", "OfflineError", "WeightsEntry", "cache_dir",
    "cached_file", "cached_path", "convert_to_safetensors", "create_with_weights", "detect_format", "get_weights",
    "is_cached", "list_weights", "read_checkpoint", "resolve_weights", "save_safetensors",
]
