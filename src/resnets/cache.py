"""Where resnets keeps what it downloads or decodes once: one resolver for every cache folder.

Weights files live in the cache root, decoded data sets in its ``data`` folder. ``RESNETS_CACHE`` (or an
explicit path) moves the root; ``~`` is expanded wherever the path comes from.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ResnetsError

CACHE_ENV = "RESNETS_CACHE"


class CacheDirError(ResnetsError, OSError):
    """A cache folder that cannot be created or written; the message says how to move the cache."""


def cache_root(path: str | os.PathLike | None = None) -> Path:
    """The cache root: ``path``, else ``$RESNETS_CACHE``, else ``~/.cache/resnets`` (``~`` expanded)."""
    if path is None:
        path = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "resnets"
    return Path(path).expanduser()


def writable_dir(directory: Path, what: str) -> Path:
    """``directory``, created if needed; a :class:`CacheDirError` naming ``RESNETS_CACHE`` if it cannot be written.

    Checked before any work, so that a read-only or misplaced cache is reported as such and not as a
    network or decoding failure.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError("permission denied")
    except OSError as e:
        reason = e.strerror or str(e)
        raise CacheDirError(
            f"cannot write the {what} cache {directory}: {reason}; set {CACHE_ENV} (or pass cache_dir=, "
            f"--cache-dir) to a writable folder"
        ) from e
    return directory
