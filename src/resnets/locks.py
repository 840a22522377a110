"""One writer at a time: advisory locks on ``NAME.lock`` files, for downloads into a shared cache (the others wait),
training run folders and features outputs (a second run fails at once, naming the process that holds it).

The lock is an ``flock``, which the system drops when its process dies, so a killed run never leaves a folder
locked. A lock file holds its holder's process id (where the file can be written) and is deleted when released;
a lock taken on a file that was meanwhile deleted (or replaced) is dropped and taken again on the current one.
Without ``fcntl`` (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import BadInput

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

LOCKING = fcntl is not None


def acquire(path: Path, wait: bool, on_wait: Callable[[], None] | None = None) -> int | None:
    """An exclusive ``flock`` on the lock file ``path`` (its descriptor), or None if busy and not ``wait``;
    ``on_wait`` is called once before waiting."""
    while True:
        try:  # flock needs no write access: a shared cache's lock file may be another user's
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            fd = os.open(path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    return None
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            held, current = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                with contextlib.suppress(OSError):  # read-only: the holder stays unnamed
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
        except FileNotFoundError:  # deleted by its previous holder: take the next one
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def release(path: Path, fd: int) -> None:
    """Delete the lock file, then let it go (in that order, so no one can lock the old file after us)."""
    path.unlink(missing_ok=True)
    os.close(fd)


def holder(path: Path) -> str:
    """The process id written in the lock file ``path``, or ``"unknown"``."""
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def waiting(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold ``path`` for the block, waiting for the process that holds it (``on_wait`` says so)."""
    if not LOCKING:
        yield
        return
    fd = acquire(path, wait=True, on_wait=on_wait)
    try:
        yield
    finally:
        release(path, fd)


@contextlib.contextmanager
def exclusive(path: Path, busy: str) -> Iterator[None]:
    """Hold ``path`` for the block; if another process holds it, a :class:`BadInput` at once: ``busy`` (what to do
    instead), the lock file and the holder's process id."""
    if not LOCKING:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = acquire(path, wait=False)
    if fd is None:
        raise BadInput(f"{busy} ({path} is held by process {holder(path)})")
    try:
        yield
    finally:
        release(path, fd)
