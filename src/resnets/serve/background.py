"""Run a server from a thread of the current process (tests, notebooks, benchmarks): uvicorn without signals."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI

from ..errors import JobFailed
from .connections import uvicorn_options


def _answers(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0, ready_timeout: float = 600,
                      shutdown_timeout: float = 30, wait_ready: bool = True) -> Iterator[int]:
    """Serve ``app`` (from :func:`.create_app`, with its config's connection limits) on ``host:port`` (0: a free
    port) until the block ends; yields the port once ``/readyz`` answers 200 (the model warmed up; with
    ``wait_ready=False`` once ``/healthz`` does), and drains in-flight requests on the way out."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=shutdown_timeout,
                                           **uvicorn_options(app.state.config)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="resnets-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while not _answers(port, "/readyz" if wait_ready else "/healthz"):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise JobFailed(f"the server on port {port} did not get ready in {ready_timeout:g} s")
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout + 5)
        sock.close()
