"""A real ``resnets serve`` server for tests (uvicorn in a thread on 127.0.0.1, a free port; or the command in a
subprocess, waited for with :func:`wait_ready`), and a client."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import subprocess
import time
import zlib
from typing import Any

from resnets.pipeline import Inference
from resnets.serve import ServeConfig, background_server, create_app


class Answer:
    """One HTTP response: status, headers (lower-case names), raw body, and the JSON if it is JSON."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.body = response.read()

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return Answer(conn.getresponse())
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port nothing listens on now, for a server started in a subprocess."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    """Returns once the ``resnets serve`` process ``proc`` answers /readyz with 200; fails the test with its output
    if it exits first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else f"exited with {proc.returncode}"
        try:
            if request(port, "GET", "/readyz", timeout=2).status == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "resnets serve did not get ready"
        time.sleep(0.1)


def multipart(data: bytes, field: str = "file", filename: str = "photo.jpg") -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with one file part, and its Content-Type header."""
    boundary = "resnets-test-boundary-7d93"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def serving(inf: Inference, config: ServeConfig = ServeConfig()) -> contextlib.AbstractContextManager[int]:
    """Serve ``inf`` until the block ends; yields the port once /readyz answers 200."""
    return background_server(create_app(inf, config), ready_timeout=60, shutdown_timeout=10)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb() -> bytes:
    """A 200-byte PNG that claims 30000 x 30000 pixels (900 MP, ten times PIL's limit)."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))
