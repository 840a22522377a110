"""Atomic file writes: a file is either complete or absent, never half-written after a crash.

Every file written here ends with the umask's mode (0644 under the usual umask 022), as ``open`` would
create it, whatever the writer did: ``tempfile.mkstemp`` forces 0600, and some writers (safetensors 0.8)
replace the temporary file with one of their own.

A full disk is reported the same way for every writer, as :class:`~resnets.errors.DiskFull` naming the file:
each writer says it differently (``OSError`` ENOSPC; safetensors "No space left on device (os error 28)";
torch's zip writer loses the errno: "[enforce fail at inline_container.cc:...] . unexpected pos ...").
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DiskFull

# ``.NAME.XXXXXXXX.tmpSUFFIX``: ours (hex) and those of earlier versions (mkstemp's [a-z0-9_]).
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?")


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (``os.umask`` sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike) -> None:
    """Give a finished file the mode ``open`` would have given it (0666 less the umask)."""
    os.chmod(path, 0o666 & ~current_umask())


def _create_temp(path: Path) -> Path:
    """A new empty file beside ``path``, named so :func:`remove_orphans` recognises it."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # a 1 in 4 billion clash: draw another name
            continue


# What writers that lose the errno say of a full disk: safetensors (Rust's io::Error), and torch's zip writer,
# whose short write is the only sign it gives ("unexpected pos N vs M", "file write failed", an iostream error).
_FULL_DISK_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122",
                   "unexpected pos", "PytorchStreamWriter failed writing", "basic_ios::clear: iostream error")


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (from any writer) reports a full disk or an exhausted quota."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(error) for text in _FULL_DISK_TEXT)


def disk_full(path: str | os.PathLike, error: BaseException, kept: str) -> DiskFull:
    """The :class:`DiskFull` for writing ``path``, saying what is ``kept``, and the writer's own words."""
    return DiskFull(errno.ENOSPC, f"cannot write {path}: no space left on device ({kept}; free some space and run "
                                  f"again): {error}", str(path))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` (same suffix, so writers that infer a format from it work)
    that is renamed onto ``path`` only if the block succeeds, and removed otherwise; a full disk is a
    :class:`~resnets.errors.DiskFull` naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
        yield tmp
        honour_umask(tmp)
        os.replace(tmp, path)
    except Exception as e:
        if is_disk_full(e) and not isinstance(e, DiskFull):
            kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
            raise disk_full(path, e, kept) from e
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def remove_orphans(directory: str | os.PathLike, older_than_s: float) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` that a killed process left in ``directory``.

    Only files untouched for ``older_than_s`` seconds go, so a write in progress is never disturbed.
    Returns the files removed.
    """
    cutoff = time.time() - older_than_s
    removed = []
    for p in Path(directory).iterdir():
        if not _TEMP_NAME.fullmatch(p.name):
            continue
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed.append(p)
        except OSError:  # gone meanwhile, or not ours to delete: leave it
            continue
    return removed
