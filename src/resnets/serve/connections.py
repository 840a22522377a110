"""Connection limits uvicorn lacks, and the uvicorn options every server of the service runs with.

uvicorn closes a kept-alive connection that stays idle after an answer (``timeout_keep_alive``), but bounds
neither a new connection that sends nothing nor headers that trickle in a byte at a time: each would hold a
socket forever. :func:`header_deadline` adds that bound to uvicorn's own HTTP protocol (httptools, else h11):
a request's headers must be complete within ``header_timeout`` seconds of the connection opening, or of the
previous answer on a kept-alive connection; past it the connection is closed (with a 408 if the client had
begun a request). Bodies are timed by the application (:func:`resnets.serve.http.read_body`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .config import ServeConfig

_TIMEOUT_TEXT = b"the request's headers took too long\n"
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                   b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_TEXT), _TIMEOUT_TEXT))


def header_deadline(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, closing a connection whose request headers take over ``header_timeout`` s."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadline(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        # Both of uvicorn's protocols make a new ``cycle`` when a request's headers are complete, and call
        # ``on_response_complete`` when its answer is sent: the two points where waiting for headers ends and starts.
        _timer: asyncio.TimerHandle | None = None
        _begun = False  # bytes of a request arrived while waiting

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            self._begun = True
            super().data_received(data)
            if self.cycle is not cycle:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.cycle.response_complete and not self.transport.is_closing():
                self._arm()  # not a pipelined request already parsed: wait for the next one's headers

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._begun = False
            self._timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                if self._begun:
                    self.transport.write(REQUEST_TIMEOUT)
                self.transport.close()

    return HeaderDeadline


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that bound how long a connection may wait: the header deadline and
    the idle keep-alive timeout."""
    return {"http": header_deadline(config.header_timeout), "timeout_keep_alive": config.keep_alive}
