"""Download and cache, against a real HTTP server on 127.0.0.1: progress, hashes, failures, offline mode,
resume after dropped connections, stalls, concurrent processes, other libraries' caches, file modes."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from resnets.atomic import atomic_path
from resnets.cache import CacheDirError
from resnets.cli import main
from resnets.data.tensors import default_cache_dir
from resnets.weights import (
    ChecksumError, DownloadError, OfflineError, WeightsEntry, cache_dir, cached_file, cached_path, is_cached,
)
from resnets.weights import download as download_module
from resnets.weights import registry as weights_registry

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB: several download chunks
BIG = random.Random(0).randbytes(4 << 20)  # 4 MiB, for resumes and concurrent downloads
PIECE = 1 << 16  # the server writes in pieces of this size


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[str] = []
        self.ranges: list[str | None] = []
        self.files: dict[str, bytes] = {}
        self.sent: Counter[str] = Counter()  # body bytes written to the socket, per file
        self.drops_left = 0  # /flaky/: this many responses hang up after 40% of their body
        self.pace = 0.0  # seconds between pieces
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    """``/files/NAME`` serves a file, resuming at a ``Range: bytes=N-``; ``/drop/NAME`` ignores ranges,
    announces the file whole and hangs up half-way; ``/flaky/NAME`` hangs up early ``drops_left`` times;
    ``/stall/NAME`` sends 1000 bytes then nothing; ``/trickle/NAME`` sends a byte every 50 ms, 60 times."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        srv = self.server
        srv.requests.append(self.path)
        srv.ranges.append(self.headers.get("Range"))
        kind, _, name = self.path.strip("/").partition("/")
        data = srv.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if (m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")) and kind != "drop":
            start = int(m[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.close_connection = True
        if kind == "drop":
            body = body[: len(body) // 2]
        elif kind == "flaky" and srv.drops_left > 0:
            srv.drops_left -= 1
            body = body[: len(body) * 2 // 5]
        elif kind == "stall":
            self.send(name, body[:1000])
            srv.stop.wait(30)
            return
        elif kind == "trickle":
            for i in range(60):  # 3 s, then hang up: a client that does not give up fails, not hangs
                if srv.stop.wait(0.05) or not self.send(name, body[i: i + 1]):
                    return
            return
        for i in range(0, len(body), PIECE):
            if not self.send(name, body[i: i + PIECE]):
                return
            time.sleep(srv.pace)

    def send(self, name: str, piece: bytes) -> bool:
        """Write and count ``piece``; False once the client has gone.

        Counted before the write: a client that has read the last piece may return (and its test check the count)
        before this thread runs again."""
        self.server.sent[name] += len(piece)
        try:
            self.wfile.write(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.server.sent[name] -= len(piece)
            return False
        return True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _online(monkeypatch, tmp_path):
    """Online, no settings from the environment, empty torch/Keras caches, short waits between retries."""
    for var in ("RESNETS_OFFLINE", "RESNETS_CACHE", "RESNETS_DOWNLOAD_TIMEOUT", "RESNETS_DOWNLOAD_RETRIES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(download_module, "RETRY_BACKOFF_S", 0.01)


def make_entry(server: Server, filename: str = "net-0123abcd.pth", route: str = "files", data: bytes = PAYLOAD,
               **hashes) -> WeightsEntry:
    server.files[filename] = data
    if not hashes:
        hashes = {"sha256": hashlib.sha256(data).hexdigest()[:8]}
    return WeightsEntry(name="resnet18.test", model="resnet18", url=f"{server.url}/{route}/{filename}",
                        sha256=hashes.get("sha256"), md5=hashes.get("md5"), file_format="torch")


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_shows_progress_then_hits_cache(server, tmp_path, capsys):
    entry = make_entry(server)
    path = cached_file(entry, tmp_path, progress=True)
    assert path == tmp_path / "net-0123abcd.pth" and path.read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert "net-0123abcd.pth" in err and "100%" in err and "1.00M" in err  # tqdm's bar, in bytes
    assert cached_file(entry, tmp_path, progress=True) == path
    assert server.requests == ["/files/net-0123abcd.pth"]  # the second call never asked the server
    assert capsys.readouterr().err == ""
    assert leftovers(tmp_path) == ["net-0123abcd.pth"]  # no part, lock or temporary file left


def test_full_sha256_and_md5_are_verified(server, tmp_path):
    good = make_entry(server, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert cached_file(good, tmp_path / "a", progress=False).read_bytes() == PAYLOAD
    keras_like = make_entry(server, "keras.h5", md5=hashlib.md5(PAYLOAD).hexdigest())
    assert cached_file(keras_like, tmp_path / "b", progress=False).read_bytes() == PAYLOAD
    bad_md5 = make_entry(server, "keras.h5", md5="0" * 32)
    with pytest.raises(ChecksumError, match=r"md5 is [0-9a-f]{32}, expected 0{32}"):
        cached_file(bad_md5, tmp_path / "c", progress=False)
    assert leftovers(tmp_path / "c") == []


def test_hash_mismatch_is_rejected_and_not_cached(server, tmp_path):
    entry = make_entry(server, sha256="deadbeef")
    with pytest.raises(ChecksumError, match=r"sha256 is [0-9a-f]{64}, expected deadbeef\.\.\."):
        cached_file(entry, tmp_path, progress=False)
    assert leftovers(tmp_path) == []  # neither the file nor its partial download
    assert not is_cached(entry, tmp_path)
    with pytest.raises(ChecksumError):  # and it is fetched (and refused) again, not served from a cache
        cached_file(entry, tmp_path, progress=False)
    assert len(server.requests) == 2


def test_connection_dropped_twice_resumes_without_refetching(server, tmp_path, capsys):
    entry = make_entry(server, "big-0123abcd.pth", route="flaky", data=BIG)
    server.drops_left = 2
    path = cached_file(entry, tmp_path, progress=True)
    assert path.read_bytes() == BIG
    # One full transfer's worth of bytes: each retry asked for exactly what was missing (no overlap).
    first = len(BIG) * 2 // 5
    second = (len(BIG) - first) * 2 // 5
    assert server.ranges == [None, f"bytes={first}-", f"bytes={first + second}-"]
    assert server.sent["big-0123abcd.pth"] == len(BIG)
    err = capsys.readouterr().err
    assert f"retrying in 0.01 s from byte {first}" in err and f"from byte {first + second}" in err
    assert leftovers(tmp_path) == ["big-0123abcd.pth"]


def test_server_ignoring_ranges_gives_up_but_keeps_the_part(server, tmp_path):
    entry = make_entry(server, route="drop")  # always hangs up half-way, and answers a range with the whole file
    with pytest.raises(DownloadError, match=r"/drop/net-0123abcd\.pth: connection closed after \d+ of \d+ bytes "
                                            r"\(attempt 5; .* RESNETS_DOWNLOAD_RETRIES"):
        cached_file(entry, tmp_path, progress=False)
    assert len(server.requests) == 1 + download_module.DEFAULT_RETRIES  # retries without progress are bounded
    assert leftovers(tmp_path) == ["net-0123abcd.pth.part"]  # kept for a later resume, no lock left
    assert (tmp_path / "net-0123abcd.pth.part").read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]


def test_partial_file_of_a_killed_run_is_resumed(server, tmp_path):
    entry = make_entry(server, data=BIG)
    (tmp_path / "net-0123abcd.pth.part").write_bytes(BIG[:1234567])
    assert cached_file(entry, tmp_path, progress=False).read_bytes() == BIG
    assert server.ranges == ["bytes=1234567-"] and server.sent["net-0123abcd.pth"] == len(BIG) - 1234567
    # A part that is already whole (killed before the rename) needs only the server's 416.
    (tmp_path / "net-0123abcd.pth").rename(tmp_path / "net-0123abcd.pth.part")
    assert cached_file(entry, tmp_path, progress=False).read_bytes() == BIG
    assert server.ranges[1:] == [f"bytes={len(BIG)}-"] and server.sent["net-0123abcd.pth"] == len(BIG) - 1234567
    # A part that is not a prefix of the file fails the hash and is thrown away, not kept.
    (tmp_path / "net-0123abcd.pth").rename(tmp_path / "net-0123abcd.pth.part")
    (tmp_path / "net-0123abcd.pth.part").write_bytes(b"x" * 1000)
    with pytest.raises(ChecksumError):
        cached_file(entry, tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_stalled_server_times_out_within_the_limit(server, tmp_path, monkeypatch):
    entry = make_entry(server, route="stall", data=BIG)
    monkeypatch.setenv("RESNETS_DOWNLOAD_RETRIES", "0")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"stalled: no data for 0\.5 s"):
        cached_file(entry, tmp_path, progress=False, timeout=0.5)
    assert 0.5 <= time.monotonic() - start < 1.5
    assert (tmp_path / "net-0123abcd.pth.part").stat().st_size == 1000
    # With a retry, the second attempt resumes after the 1000 bytes received.
    with pytest.raises(DownloadError, match="attempt 2"):
        download_module.download(entry, tmp_path / entry.filename, progress=False, timeout=0.5, retries=1)
    assert server.ranges == [None, "bytes=1000-", "bytes=2000-"]


def test_trickling_server_times_out_too(server, tmp_path, monkeypatch):
    """One byte every 50 ms never trips a per-read timeout; less than 64 KiB in the limit is a stall."""
    entry = make_entry(server, route="trickle")
    monkeypatch.setenv("RESNETS_DOWNLOAD_TIMEOUT", "1")
    monkeypatch.setenv("RESNETS_DOWNLOAD_RETRIES", "0")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"stalled: \d+ bytes in 1\.\d s \(under 64 KiB\)"):
        cached_file(entry, tmp_path, progress=False)
    assert 1.0 <= time.monotonic() - start < 2.0


def test_bad_timeout_settings_are_named(server, tmp_path, monkeypatch):
    entry = make_entry(server)
    monkeypatch.setenv("RESNETS_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="RESNETS_DOWNLOAD_TIMEOUT='soon' is not a float"):
        cached_file(entry, tmp_path, progress=False)
    with pytest.raises(ValueError, match="must be at least"):
        cached_file(entry, tmp_path, progress=False, timeout=-1)
    assert server.requests == []


CHILD = textwrap.dedent("""
    import pathlib, sys, time
    from resnets.weights import WeightsEntry, cached_file
    url, sha256, cache, ready, go = sys.argv[1:]
    pathlib.Path(ready).touch()
    while not pathlib.Path(go).exists():
        time.sleep(0.005)
    entry = WeightsEntry(name="resnet18.test", model="resnet18", url=url, sha256=sha256, file_format="torch")
    print(cached_file(entry, cache, progress=False))
""")


@pytest.mark.slow
def test_two_processes_share_one_download(server, tmp_path):
    entry = make_entry(server, data=BIG)
    server.pace = 0.02  # 64 pieces: the transfer takes over a second, so the two requests overlap
    go = tmp_path / "go"
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, entry.url, entry.sha256, str(tmp_path / "cache"),
                          str(tmp_path / f"ready{i}"), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err
        assert out.strip() == str(tmp_path / "cache" / entry.filename)
    assert server.requests == ["/files/net-0123abcd.pth"]  # one GET: the other process waited for it
    assert server.sent["net-0123abcd.pth"] == len(BIG)
    assert leftovers(tmp_path / "cache") == ["net-0123abcd.pth"]


def test_unusable_cache_names_resnets_cache_before_any_request(server, tmp_path, monkeypatch):
    entry = make_entry(server)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(CacheDirError, match=r"cannot write the weights cache .*/file/cache: Not a directory; "
                                            r"set RESNETS_CACHE"):
        cached_file(entry, progress=False)
    assert server.requests == []


def test_read_only_cache_names_resnets_cache(server):
    """A cache folder the user may not write: as root (who may write anywhere) the check runs as nobody."""
    entry = make_entry(server)
    base = Path(tempfile.mkdtemp())  # pytest's tmp_path is private to root; nobody must reach this one
    try:
        os.chmod(base, 0o755)
        cache = base / "ro"
        cache.mkdir(mode=0o555)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop root if we have it, try, report the error through the pipe
            message = b"no error"
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                cached_file(entry, cache, progress=False)
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                message = f"{type(e).__name__}: {e}".encode()
            finally:
                os.write(write_end, message)
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as f:
            message = f.read().decode()
        os.waitpid(pid, 0)
    finally:
        shutil.rmtree(base)
    assert re.match(r"CacheDirError: cannot write the weights cache .*/ro: permission denied; set RESNETS_CACHE",
                    message), message
    assert server.requests == []


def test_torch_hub_and_keras_caches_are_reused_after_a_hash_check(server, tmp_path):
    entry = make_entry(server)
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"  # TORCH_HOME is set by the fixture
    hub.mkdir(parents=True)
    (hub / entry.filename).write_bytes(PAYLOAD)
    assert cached_file(entry, tmp_path / "cache", progress=False) == hub / entry.filename
    assert is_cached(entry, tmp_path / "cache") and cached_path(entry, tmp_path / "cache") == hub / entry.filename
    assert server.requests == [] and leftovers(tmp_path / "cache") == []
    # Keras' copy of an .h5 (md5-published) file, likewise.
    keras_entry = make_entry(server, "keras.h5", md5=hashlib.md5(PAYLOAD).hexdigest())
    models = tmp_path / "keras_home" / "models"
    models.mkdir(parents=True)
    (models / "keras.h5").write_bytes(PAYLOAD)
    assert cached_file(keras_entry, tmp_path / "cache", progress=False) == models / "keras.h5"
    assert server.requests == []
    # Another file under the same name is not ours: it is left alone and the published one downloaded.
    (hub / entry.filename).write_bytes(b"someone else's file")
    assert cached_file(entry, tmp_path / "cache", progress=False) == tmp_path / "cache" / entry.filename
    assert server.requests == ["/files/net-0123abcd.pth"]
    assert (hub / entry.filename).read_bytes() == b"someone else's file"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_follow_the_umask(server, tmp_path, umask, mode):
    """Not mkstemp's 0600: in a shared cache (or for shared outputs) other users can read the files."""
    entry = make_entry(server)
    old = os.umask(umask)
    try:
        path = cached_file(entry, tmp_path / "cache", progress=False)
        with atomic_path(tmp_path / "out.safetensors") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(mode)
    assert oct((tmp_path / "out.safetensors").stat().st_mode & 0o777) == oct(mode)


def test_orphans_of_killed_downloads_are_cleaned(server, tmp_path):
    entry = make_entry(server)
    old = time.time() - 2 * download_module.STALE_AFTER_S
    files = {  # name: (untouched for long, expected to be removed)
        ".net-0123abcd.pth.k3j4h5g6.tmp.pth": (True, True),  # an atomic_path temp file (mkstemp's naming)
        ".other.pth.0a1b2c3d.tmp.pth": (False, False),  # the same, but recent: a write in progress
        "other-99.pth.part": (True, True),  # an abandoned partial download
        "other-99.pth.lock": (True, True),  # and the lock file its SIGKILLed process left
        "recent-99.pth.part": (False, False),  # a partial download from today: kept to resume
        "resnet50-0676ba61.pth": (True, False),  # a cached file, however old
    }
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, (stale, _) in files.items():
        (cache / name).write_bytes(b"x")
        if stale:
            os.utime(cache / name, (old, old))
    cached_file(entry, cache, progress=False)
    assert leftovers(cache) == sorted([entry.filename] + [n for n, (_, removed) in files.items() if not removed])


def test_unreachable_or_missing_file_is_a_download_error(server, tmp_path):
    entry = dataclasses.replace(make_entry(server), url=f"{server.url}/files/absent-0123abcd.pth")
    with pytest.raises(DownloadError, match="404"):
        cached_file(entry, tmp_path, progress=False)
    assert leftovers(tmp_path) == []
    assert len(server.requests) == 1  # a 404 is final: no retry


def test_corrupt_cached_file_is_refused(server, tmp_path):
    entry = make_entry(server)
    (tmp_path / entry.filename).write_bytes(PAYLOAD[:-1])  # e.g. a bad manual copy
    with pytest.raises(ChecksumError, match=f"delete {tmp_path / entry.filename}"):
        cached_file(entry, tmp_path, progress=False)
    assert server.requests == []


def test_offline_mode_explains_where_to_put_the_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    entry = make_entry(server)
    with pytest.raises(OfflineError) as exc:
        cached_file(entry)
    message = str(exc.value)
    assert "net-0123abcd.pth" in message and entry.url in message
    assert str(tmp_path / "cache" / "net-0123abcd.pth") in message
    assert server.requests == []
    # Following the instructions works, still offline.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "net-0123abcd.pth").write_bytes(PAYLOAD)
    assert cached_file(entry).read_bytes() == PAYLOAD


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert default_cache_dir() == tmp_path / "env" / "data"  # the data-set cache lives in the same root
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESNETS_CACHE", "~/x")  # expanded everywhere, never a literal ./~ folder
    assert cache_dir() == tmp_path / "home" / "x"
    assert default_cache_dir() == tmp_path / "home" / "x" / "data"
    monkeypatch.delenv("RESNETS_CACHE")
    assert cache_dir() == tmp_path / "home" / ".cache" / "resnets"
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "resnets" / "data"


def test_cli_download(server, tmp_path, monkeypatch, capsys):
    entry = make_entry(server)
    monkeypatch.setitem(weights_registry.WEIGHTS, entry.name, entry)
    assert main(["weights", "download", entry.name, "--cache-dir", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / entry.filename)
    assert (tmp_path / entry.filename).read_bytes() == PAYLOAD
    with pytest.raises(SystemExit) as exc:
        main(["weights", "download", "resnet18.nope"])
    assert exc.value.code == 2
