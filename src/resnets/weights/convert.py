"""Write weights as ``.safetensors``: no pickle, memory-mappable, with the entry describing them.

The converted file carries its :class:`WeightsEntry` (variant, preprocessing, classes, metrics)
as JSON metadata, so that loading it rebuilds exactly the network it came from, including what
tensors cannot show (Keras' stride-in-1x1 and BN epsilon).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..errors import BadWeights
from .checkpoint import read_checkpoint
from .entry import WeightsEntry, save_safetensors
from .loading import create_with_weights, entry_for_file, weights_file


def convert_to_safetensors(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[Path, WeightsEntry | None]:
    """Convert a weights file (or registry name or ``hf-hub:`` repo, downloaded if needed) to ``dst``; returns it
    and its entry."""
    path, registered = weights_file(None, src, cache_dir, progress)
    ckpt = read_checkpoint(path)
    if registered is not None:
        entry: WeightsEntry | None = registered
    elif ckpt.entry is not None:
        entry = ckpt.entry
    elif ckpt.model is not None:
        entry = entry_for_file(path, ckpt.model, ckpt, ckpt.model_kwargs)
    else:
        entry = None
    if entry is not None:
        # The new file has its own bytes: the old hashes and URL no longer describe it.
        entry = dataclasses.replace(entry, url=None, sha256=None, md5=None, asset=None, file_format="safetensors",
                                    model_kwargs={**ckpt.model_kwargs, **entry.model_kwargs}, file_size_mb=None)
    written = save_safetensors(ckpt.state_dict, dst, entry)
    model = entry.model if entry is not None else ckpt.model
    if model is not None:  # what is written must load back: check it now, not when a user first tries
        try:
            create_with_weights(model, written)
        except (ValueError, OSError) as e:
            written.unlink(missing_ok=True)
            raise BadWeights(f"{src}: the converted file would not load, so it was not kept: {e}") from None
    return written, entry
