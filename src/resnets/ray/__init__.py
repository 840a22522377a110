"""Features and predictions over millions of images on Ray Data (optional extra ``resnets[ray]``).

For a dataset you already have: :func:`map_features` / :func:`map_predictions` add a ``features`` or
``predictions`` column (and ``error``) to any Ray dataset of image paths or bytes. For a file list,
as ``resnets features|predict --engine ray`` does: :func:`extract_features` (resumable, same output
files as the local engine) and :func:`predict_files`. Importing this module imports Ray; ``import
resnets`` never does.
"""

from __future__ import annotations

from ..errors import MissingExtra

try:
    import ray.data  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingExtra("resnets.ray (and --engine ray) needs Ray Data: pip install 'resnets[ray]'") from e

from .jobs import SHARD_SIZE, extract_features, predict_files
from .stages import map_features, map_predictions

__all__ = ["SHARD_SIZE", "extract_features", "map_features", "map_predictions", "predict_files"]
