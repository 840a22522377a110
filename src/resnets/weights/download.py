"""Fetch weights files into a local cache, verifying each one before it is trusted.

A file enters the cache only whole and with the published hash: it streams into ``NAME.part`` next to
its final place, hashed as it arrives, and is moved in with ``os.replace`` once the hash matches.
Networks fail, so a download

* is retried with exponential backoff (``RESNETS_DOWNLOAD_RETRIES`` times in a row without 1 MiB of new data) and
  resumed where it stopped with an HTTP ``Range`` request, also by a later run after a crash;
* gives up an attempt that brings less than 64 KiB in ``RESNETS_DOWNLOAD_TIMEOUT`` seconds (default 60),
  so a dead or trickling connection does not hang forever;
* is done once for all processes sharing the cache: a lock file ``NAME.lock`` makes the others wait for it
  and then use the verified file.

A host that cannot be reached at all (its name does not resolve, the connection is refused, no route: an
offline machine) is not retried: waiting would not change it, so the first attempt ends with a message
naming ``RESNETS_OFFLINE=1``. A verified file of the same name in torch hub's or Keras' own cache is used as
it is, with no request. ``RESNETS_OFFLINE=1`` forbids the network; ``RESNETS_CACHE`` moves the cache.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

import torch.hub
from tqdm.auto import tqdm

from ..errors import BadInput, JobFailed
from ..atomic import disk_full, honour_umask, is_disk_full, remove_orphans
from ..cache import cache_root, writable_dir
from ..locks import LOCKING, acquire, release, waiting
from .registry import WeightsEntry, list_weights

CHUNK = 1 << 20
TIMEOUT_ENV, RETRIES_ENV = "RESNETS_DOWNLOAD_TIMEOUT", "RESNETS_DOWNLOAD_RETRIES"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 4
MIN_PROGRESS_BYTES = 64 << 10  # less than this within the timeout counts as a stall
RETRY_BACKOFF_S = 1.0  # the first wait between attempts; doubled after each failure in a row
MAX_BACKOFF_S = 15.0
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
STALE_AFTER_S = 24 * 3600.0  # partial and temporary files untouched this long are orphans
PART, LOCK = ".part", ".lock"


class DownloadError(JobFailed):
    """A weights file could not be fetched."""


class ChecksumError(DownloadError):
    """A file's content is not the published one (corrupt, truncated or tampered with)."""


class OfflineError(DownloadError):
    """The file is not cached and ``RESNETS_OFFLINE`` forbids downloading it."""


class _Transient(Exception):
    """A failure that another attempt may not meet: a dropped connection, a stall, a 5xx answer."""


class _RangeRefused(Exception):
    """HTTP 416: the partial file is as long as the whole file, or longer."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The weights cache: ``path``, else ``$RESNETS_CACHE``, else ``~/.cache/resnets``."""
    return cache_root(path)


def is_offline() -> bool:
    return os.environ.get("RESNETS_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


_NO_ROUTE = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH})


def unreachable(error: BaseException, url: str) -> str | None:
    """What ``error`` says if no attempt can reach ``url``'s host (its name does not resolve, the connection is
    refused, there is no route), with the offline setting to use instead; None for what a retry may cure.

    ``error`` may wrap the socket's error (urllib's ``URLError.reason``, an HTTP client's ``__cause__``).
    """
    while not isinstance(error, socket.gaierror) and getattr(error, "errno", None) not in _NO_ROUTE:
        error = error.reason if isinstance(error, urllib.error.URLError) else getattr(error, "__cause__", None)
        if not isinstance(error, BaseException):
            return None
    host = urllib.parse.urlsplit(url).hostname or url
    what = "its name does not resolve" if isinstance(error, socket.gaierror) else "no connection"
    return (f"cannot reach {host}: {what} ({error.strerror or error}); on a machine without network, set "
            "RESNETS_OFFLINE=1 to use cached files without trying")


def probe(url: str, timeout: float = 5.0) -> OSError | None:
    """The error of one TCP connection to ``url``'s host (or the proxy the environment names for it) if
    :func:`unreachable` says no attempt can get there, for clients that retry such failures themselves; None
    when it connects, or is only slow."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "//" in proxy else f"//{proxy}")
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError as e:
        return e if unreachable(e, url) else None
    return None


def _setting(env: str, value: float | None, default: float, kind: type, minimum: float) -> Any:
    """An argument, else the environment variable, else the default; refused below ``minimum``."""
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return kind(default)
        try:
            value = kind(text)
        except ValueError:
            raise BadInput(f"{env}={text!r} is not a {kind.__name__}") from None
    if not value >= minimum:
        raise BadInput(f"{env} (or the argument) must be at least {minimum}, got {value}")
    return kind(value)


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


def _hash_file(path: Path, hashers: dict[str, Any]) -> int:
    """Feed the file to the hashers; its size."""
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
            size += len(chunk)
    return size


def verify_file(entry: WeightsEntry, path: Path) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the entry's published hash."""
    hashers = _hashers(entry)
    if hashers:
        _hash_file(path, hashers)
        _check_digests(entry, hashers, str(path))


def _remove_stale(directory: Path) -> None:
    """Delete what killed processes left: temporary files, and partial downloads or locks nobody holds."""
    remove_orphans(directory, STALE_AFTER_S)
    if not LOCKING:
        return
    cutoff = time.time() - STALE_AFTER_S
    for p in directory.iterdir():
        if not p.name.endswith((PART, LOCK)):
            continue
        try:
            if p.stat().st_mtime >= cutoff:
                continue
        except OSError:
            continue
        target = p.with_name(p.name.rsplit(".", 1)[0])
        lock = target.with_name(target.name + LOCK)
        fd = acquire(lock, wait=False)
        if fd is not None:  # no download of that file is running
            target.with_name(target.name + PART).unlink(missing_ok=True)
            release(lock, fd)


# --- the transfer ----------------------------------------------------------------------------------


class _Part:
    """``NAME.part``: the bytes received so far (perhaps by an earlier run) and their running hashes."""

    def __init__(self, path: Path, entry: WeightsEntry) -> None:
        self.path, self.entry = path, entry
        self.hashers = _hashers(entry)
        self.size = _hash_file(path, self.hashers) if path.is_file() else 0

    def add(self, chunk: bytes) -> None:
        for h in self.hashers.values():
            h.update(chunk)
        self.size += len(chunk)

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.hashers, self.size = _hashers(self.entry), 0

    def check(self, what: str) -> None:
        _check_digests(self.entry, self.hashers, what)


def _body_range(resp: http.client.HTTPResponse) -> tuple[int, int | None]:
    """Where the response's body starts in the file, and the file's size if known."""
    if resp.status == 206:
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
        if m is None:
            raise _Transient(f"unusable Content-Range {resp.headers.get('Content-Range')!r}")
        return int(m[1]), None if m[2] == "*" else int(m[2])
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _fetch_once(url: str, part: _Part, timeout: float, bar: tqdm) -> None:
    """One request: append the rest of the file to ``part``, resuming at its size.

    Raises :class:`_Transient` for what another attempt may cure; other errors are final.
    """
    headers = {"Range": f"bytes={part.size}-"} if part.size else {}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and part.size:
            raise _RangeRefused from None
        if e.code in RETRY_STATUS:
            raise _Transient(str(e)) from e
        raise DownloadError(f"could not download {url}: {e}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        if (down := unreachable(e, url)) is not None:
            raise DownloadError(f"could not download {url}: {down}") from e
        reason = getattr(e, "reason", None) or e
        stalled = isinstance(reason, TimeoutError)
        raise _Transient(f"stalled: no answer for {timeout:g} s" if stalled else str(reason)) from e
    with resp:
        start, total = _body_range(resp)
        if start != part.size:  # the server ignored or misread the range: start from the beginning
            part.restart()
            if start != 0:
                raise _Transient(f"the server resumed at byte {start} instead of {part.size}")
        bar.reset(total)
        bar.update(part.size)
        window_start, window_bytes = time.monotonic(), 0
        with open(part.path, "ab") as out:
            while True:
                try:
                    chunk = resp.read1(CHUNK)
                except TimeoutError as e:
                    raise _Transient(f"stalled: no data for {timeout:g} s") from e
                except (http.client.HTTPException, OSError) as e:
                    raise _Transient(f"connection lost: {e!r}") from e
                if not chunk:
                    break
                out.write(chunk)
                part.add(chunk)
                bar.update(len(chunk))
                window_bytes += len(chunk)
                now = time.monotonic()
                if now - window_start > timeout:
                    raise _Transient(f"stalled: {window_bytes} bytes in {now - window_start:.1f} s (under 64 KiB)")
                if window_bytes >= MIN_PROGRESS_BYTES:
                    window_start, window_bytes = now, 0
    if total is not None and part.size < total:
        raise _Transient(f"connection closed after {part.size} of {total} bytes")


def _fetch(entry: WeightsEntry, part: _Part, timeout: float, retries: int, bar: tqdm) -> None:
    """Fill ``part`` with the whole file, retrying with backoff; ``retries`` failures in a row end it.

    An attempt that added at least 1 MiB beyond what was ever held is progress, not a failure in a row, so
    a large file on a flaky link gets there; a server that drops or stalls early every time does not loop.
    """
    failures, attempts, best = 0, 0, part.size
    while True:
        attempts += 1
        try:
            _fetch_once(entry.url, part, timeout, bar)
            return
        except _RangeRefused:
            if part.hashers:
                try:
                    part.check("")
                    return  # an earlier run received everything but died before moving the file in
                except ChecksumError:
                    pass
            part.restart()
        except _Transient as e:
            failures = 1 if part.size >= best + CHUNK else failures + 1
            best = max(best, part.size)
            if failures > retries:
                raise DownloadError(
                    f"could not download {entry.url}: {e} (attempt {attempts}; {part.size} bytes kept in "
                    f"{part.path} to resume; {TIMEOUT_ENV} and {RETRIES_ENV} set the patience)"
                ) from e
            wait = min(RETRY_BACKOFF_S * 2 ** (failures - 1), MAX_BACKOFF_S)
            if not bar.disable:
                bar.write(f"{part.path.name}: {e}; retrying in {wait:g} s from byte {part.size}", file=sys.stderr)
            time.sleep(wait)


def download(
    entry: WeightsEntry,
    dest: Path,
    progress: bool = True,
    timeout: float | None = None,
    retries: int | None = None,
) -> Path:
    """Fetch ``entry.url`` to ``dest``, which appears only complete and verified.

    ``timeout``: seconds an attempt may go with less than 64 KiB received (default ``$RESNETS_DOWNLOAD_TIMEOUT``
    or 60); ``retries``: failed attempts in a row allowed (default ``$RESNETS_DOWNLOAD_RETRIES`` or 4).
    """
    timeout = _setting(TIMEOUT_ENV, timeout, DEFAULT_TIMEOUT_S, float, 0.001)
    retries = _setting(RETRIES_ENV, retries, DEFAULT_RETRIES, int, 0)
    writable_dir(dest.parent, "weights")

    def say_waiting() -> None:
        if progress:
            print(f"{dest.name}: waiting for another process downloading it into {dest.parent}", file=sys.stderr)

    try:
        with waiting(dest.with_name(dest.name + LOCK), on_wait=say_waiting):
            if dest.is_file():  # another process has just downloaded it
                verify_file(entry, dest)
                return dest
            _remove_stale(dest.parent)
            part = _Part(dest.with_name(dest.name + PART), entry)
            with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress) as bar:
                try:
                    _fetch(entry, part, timeout, retries, bar)
                except DownloadError as e:  # one clear message, not the chain of attempts behind it
                    raise DownloadError(f"{e}; or download {entry.url} on a connected machine and put it at "
                                        f"{dest}") from None
            try:
                part.check(f"downloaded {entry.url}")
            except ChecksumError:
                part.restart()
                raise
            honour_umask(part.path)
            os.replace(part.path, dest)
    except OSError as e:  # the network's errors are handled above: this is the local disk
        if is_disk_full(e):
            raise disk_full(dest, e, f"what arrived is kept in {dest.name}{PART} to resume") from e
        raise DownloadError(f"could not write {entry.filename} into {dest.parent}: {e}") from e
    return dest


# --- the cache -------------------------------------------------------------------------------------


def _other_caches(entry: WeightsEntry) -> list[Path]:
    """Where torch hub and Keras keep a file of this name (``TORCH_HOME``/``torch.hub.set_dir``, ``KERAS_HOME``)."""
    keras_homes = [os.environ["KERAS_HOME"]] if os.environ.get("KERAS_HOME") else ["~/.keras", "/tmp/.keras"]
    dirs = [Path(torch.hub.get_dir()) / "checkpoints"] + [Path(h).expanduser() / "models" for h in keras_homes]
    return [d / entry.filename for d in dirs]


def _verified_elsewhere(entry: WeightsEntry) -> Path | None:
    """A copy with the published hash in torch hub's or Keras' cache (never an unverifiable one)."""
    if not _hashers(entry):
        return None
    for path in _other_caches(entry):
        try:
            if path.is_file():
                verify_file(entry, path)
                return path
        except (ChecksumError, OSError):  # another file of that name, or unreadable: not ours to judge
            continue
    return None


def cached_file(
    entry: WeightsEntry,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    verify: bool = True,
    timeout: float | None = None,
) -> Path:
    """Local path of the entry's file: the packaged asset, the verified cache copy, a verified copy in
    torch hub's or Keras' cache, or a fresh download (``timeout`` as in :func:`download`)."""
    if entry.asset:
        dest = cached_path(entry, cache)
        if not dest.is_file():
            alternatives = ", ".join(e.name for e in list_weights(entry.model) if e.url)
            raise FileNotFoundError(
                f"weights {entry.name!r} are not shipped in this build ({dest} is missing); use one of: {alternatives}"
            )
        if verify and entry.sha256:
            verify_file(entry, dest)  # a damaged install must not pass for the shipped weights
        return dest
    dest = cache_dir(cache) / entry.filename
    if dest.is_file():
        if verify:
            try:
                verify_file(entry, dest)
            except ChecksumError as e:
                raise ChecksumError(f"{e}; delete {dest} and try again") from None
        return dest
    if (elsewhere := _verified_elsewhere(entry)) is not None:
        return elsewhere
    if is_offline():
        raise OfflineError(
            f"weights {entry.name!r} ({entry.filename}) are not in the cache (nor torch hub's or Keras') and "
            f"RESNETS_OFFLINE is set; download {entry.url} on a connected machine and put it at {dest}"
        )
    return download(entry, dest, progress=progress, timeout=timeout)


def cached_path(entry: WeightsEntry, cache: str | os.PathLike | None = None) -> Path:
    """Where the entry's file is (packaged, in the cache, or else in torch hub's or Keras' cache), or else
    where it belongs in the cache."""
    if entry.asset:
        return Path(str(resources.files("resnets") / "assets" / entry.asset))
    dest = cache_dir(cache) / entry.filename
    if not dest.is_file():
        return next((p for p in _other_caches(entry) if p.is_file()), dest)
    return dest


def is_cached(entry: WeightsEntry, cache: str | os.PathLike | None = None) -> bool:
    """Whether the entry's file is available without a download (not re-hashed)."""
    return cached_path(entry, cache).is_file()
