"""A real ``resnets serve`` server for tests: uvicorn in a thread on 127.0.0.1, a free port, stopped on exit."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from resnets.pipeline import Inference
from resnets.serve import ServeConfig, create_app


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


def multipart(data: bytes, field: str = "file", filename: str = "photo.jpg") -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with one file part, and its Content-Type header."""
    boundary = "resnets-test-boundary-7d93"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@contextlib.contextmanager
def serving(inf: Inference, config: ServeConfig = ServeConfig(), ready_timeout: float = 60) -> Iterator[int]:
    """Serve ``inf`` until the block ends; yields the port once /readyz answers 200."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(inf, config), log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                if request(port, "GET", "/readyz", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the test server on port {port} did not get ready")
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
