"""Fetch weights files into a local cache, verifying each one before it is trusted.

A file enters the cache only whole and with the published hash: it is written to a temporary
file next to its final place, hashed while it streams, and moved in with ``os.replace``.
``RESNETS_OFFLINE=1`` forbids the network; ``RESNETS_CACHE`` moves the cache.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..atomic import atomic_path
from .registry import WeightsEntry, list_weights

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A weights file could not be fetched."""


class ChecksumError(DownloadError):
    """A file's content is not the published one (corrupt, truncated or tampered with)."""


class OfflineError(DownloadError):
    """The file is not cached and ``RESNETS_OFFLINE`` forbids downloading it."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The weights cache: ``path``, else ``$RESNETS_CACHE``, else ``~/.cache/resnets``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("RESNETS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnets"


def is_offline() -> bool:
    return os.environ.get("RESNETS_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _hashers(entry: WeightsEntry) -> dict[str, Any]:
    hashers = {}
    if entry.sha256:
        hashers["sha256"] = hashlib.sha256()
    if entry.md5:
        hashers["md5"] = hashlib.md5()
    return hashers


def _check_digests(entry: WeightsEntry, hashers: dict[str, Any], what: str) -> None:
    """Compare digests with the entry's; a sha256 prefix is checked as torch.hub does."""
    expected = {"sha256": entry.sha256, "md5": entry.md5}
    for algo, h in hashers.items():
        digest = h.hexdigest()
        if not digest.startswith(expected[algo].lower()):
            raise ChecksumError(
                f"{what}: {algo} is {digest}, expected {expected[algo]}"
                + ("..." if len(expected[algo]) < len(digest) else "")
                + f" (published for {entry.name} at {entry.url})"
            )


def verify_file(entry: WeightsEntry, path: Path) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the entry's published hash."""
    hashers = _hashers(entry)
    if not hashers:
        return
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    _check_digests(entry, hashers, str(path))


def download(entry: WeightsEntry, dest: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Stream ``entry.url`` to ``dest``; the file appears there only if complete and verified."""
    hashers = _hashers(entry)
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as out, \
                urllib.request.urlopen(entry.url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      disable=not progress) as bar:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            out.close()
            if total is not None and received != total:
                raise DownloadError(f"{entry.url}: connection closed after {received} of {total} bytes")
            _check_digests(entry, hashers, f"downloaded {entry.url}")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise DownloadError(f"could not download {entry.url} to {dest}: {e}") from e
    return dest


def cached_file(
    entry: WeightsEntry,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    verify: bool = True,
) -> Path:
    """Local path of the entry's file: the packaged asset, the verified cache copy, or a fresh download."""
    dest = cached_path(entry, cache)
    if entry.asset:
        if not dest.is_file():
            alternatives = ", ".join(e.name for e in list_weights(entry.model) if e.url)
            raise FileNotFoundError(
                f"weights {entry.name!r} are not shipped in this build ({dest} is missing); use one of: {alternatives}"
            )
        if verify and entry.sha256:
            verify_file(entry, dest)  # a damaged install must not pass for the shipped weights
        return dest
    if dest.is_file():
        if verify:
            try:
                verify_file(entry, dest)
            except ChecksumError as e:
                raise ChecksumError(f"{e}; delete {dest} and try again") from None
        return dest
    if is_offline():
        raise OfflineError(
            f"weights {entry.name!r} ({entry.filename}) are not in the cache and RESNETS_OFFLINE is set; "
            f"download {entry.url} on a connected machine and put it at {dest}"
        )
    return download(entry, dest, progress=progress)


def cached_path(entry: WeightsEntry, cache: str | os.PathLike | None = None) -> Path:
    """Where the entry's file is (packaged) or belongs (cache), whether or not it is there."""
    if entry.asset:
        return Path(str(resources.files("resnets") / "assets" / entry.asset))
    return cache_dir(cache) / entry.filename


def is_cached(entry: WeightsEntry, cache: str | os.PathLike | None = None) -> bool:
    """Whether the entry's file is available without a download (not re-hashed)."""
    return cached_path(entry, cache).is_file()
