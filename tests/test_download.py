"""Download and cache, against a real HTTP server on 127.0.0.1: progress, hashes, failures, offline mode."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading

import pytest

from resnets.cli import main
from resnets.weights import (
    ChecksumError, DownloadError, OfflineError, WeightsEntry, cache_dir, cached_file, is_cached,
)
from resnets.weights import registry as weights_registry

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB: several download chunks


class Server(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[str] = []
        self.files: dict[str, bytes] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    """``/files/NAME`` serves a file; ``/drop/NAME`` announces it whole but hangs up half-way."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        kind, _, name = self.path.strip("/").partition("/")
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data if kind == "files" else data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    monkeypatch.delenv("RESNETS_OFFLINE", raising=False)
    monkeypatch.delenv("RESNETS_CACHE", raising=False)


def make_entry(server: Server, filename: str = "net-0123abcd.pth", route: str = "files", **hashes) -> WeightsEntry:
    server.files[filename] = PAYLOAD
    if not hashes:
        hashes = {"sha256": hashlib.sha256(PAYLOAD).hexdigest()[:8]}
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
    assert leftovers(tmp_path) == ["net-0123abcd.pth"]


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
    assert leftovers(tmp_path) == []  # neither the file nor a temporary part
    assert not is_cached(entry, tmp_path)
    with pytest.raises(ChecksumError):  # and it is fetched (and refused) again, not served from a cache
        cached_file(entry, tmp_path, progress=False)
    assert len(server.requests) == 2


def test_connection_dropped_mid_transfer_leaves_nothing(server, tmp_path):
    entry = make_entry(server, route="drop")
    with pytest.raises(DownloadError, match=r"/drop/net-0123abcd\.pth"):
        cached_file(entry, tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_unreachable_or_missing_file_is_a_download_error(server, tmp_path):
    entry = dataclasses.replace(make_entry(server), url=f"{server.url}/files/absent-0123abcd.pth")
    with pytest.raises(DownloadError, match="404"):
        cached_file(entry, tmp_path, progress=False)
    assert leftovers(tmp_path) == []


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
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("RESNETS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "resnets"


def test_cli_download(server, tmp_path, monkeypatch, capsys):
    entry = make_entry(server)
    monkeypatch.setitem(weights_registry.WEIGHTS, entry.name, entry)
    assert main(["weights", "download", entry.name, "--cache-dir", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / entry.filename)
    assert (tmp_path / entry.filename).read_bytes() == PAYLOAD
    with pytest.raises(SystemExit) as exc:
        main(["weights", "download", "resnet18.nope"])
    assert exc.value.code == 2
