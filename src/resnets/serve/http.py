"""The HTTP side of the service: reading bodies within size and time limits, the API key, errors as JSON,
request metrics.

Errors are answered by type: :class:`ApiError` as it says; the package's :class:`~resnets.errors.BadInput`
(and :class:`~resnets.errors.UnknownName`) 422, :class:`~resnets.errors.MissingExtra` 501, anything else 500.
Under ``/v2`` (the Open Inference Protocol) the body is the protocol's ``{"error": message}``, a
:class:`~resnets.serve.oip.OipError` has its own status and a bad input is 400.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..errors import BadInput, MissingExtra, ResnetsError
from .config import ServeConfig
from .metrics import Metrics
from .oip import OipError

KNOWN_PATHS = ("/v1/predict", "/v1/features", "/v1/explain", "/healthz", "/readyz", "/metrics", "/", "/docs",
               "/openapi.json", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models", "/v2/repository/index")
#: The Open Inference Protocol's per-model paths, counted by their template (not one series per model name).
V2_MODEL_PATH = re.compile(r"/v2/(models|repository/models)/[^/]+(/versions/[^/]+)?(/[a-z]+)?")
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class ApiError(ResnetsError):
    """An error answered as ``{"error": code, "detail": message}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class ClientGone(ResnetsError):
    """The client disconnected before its answer was ready."""


def error_response(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def is_v2(request: Request) -> bool:
    """Whether the request is the Open Inference Protocol's (errors as ``{"error": message}``)."""
    return request.url.path == "/v2" or request.url.path.startswith("/v2/")


def endpoint_of(path: str) -> str:
    """The endpoint a path counts under in the metrics: the path itself if known, else its template."""
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/static/"):
        return "/static"
    found = V2_MODEL_PATH.fullmatch(path)
    if found:
        return f"/v2/{found[1]}/{{name}}{'/versions/{version}' if found[2] else ''}{found[3] or ''}"
    return "other"


class Uploads:
    """The bodies being received, not yet counted against ``--max-queue``: how many, and the bytes they hold.

    Their bytes together are bounded (``limit``; past it a body is refused with 503), so that reading bodies
    before admission never lets memory grow with the number of connections."""

    def __init__(self, limit: int) -> None:
        self.limit, self.bodies, self.bytes = limit, 0, 0


async def read_body(request: Request, config: ServeConfig, uploads: Uploads) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``config.max_upload_bytes``, and
    with 408 (closing the connection) when it stalls: no data for ``body_timeout`` seconds, or, once it has
    taken that long, under ``min_upload_rate`` KiB/s on average."""
    limit = config.max_upload_bytes
    too_big = ApiError(413, "payload_too_large", f"the body is over the server's limit of {limit} bytes "
                                                  f"(--max-upload-mb {limit / 1024 / 1024:g})")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    loop = asyncio.get_running_loop()
    rate = config.min_upload_rate * 1024
    chunks, size = [], 0
    start = last = loop.time()
    uploads.bodies += 1
    try:
        while True:
            deadline = min(last + config.body_timeout, start + max(config.body_timeout, size / rate))
            try:
                message = await asyncio.wait_for(request.receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ApiError(408, "request_timeout", f"the upload stalled: {size} bytes in "
                               f"{loop.time() - start:.1f} s (the server waits --body-timeout "
                               f"{config.body_timeout:g} s for data, and wants --min-upload-rate "
                               f"{config.min_upload_rate:g} KiB/s after that)", {"Connection": "close"}) from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                size, last = size + len(chunk), loop.time()
                if size > limit:
                    raise too_big
                uploads.bytes += len(chunk)
                chunks.append(chunk)
                if uploads.bytes > uploads.limit:
                    raise ApiError(503, "overloaded", f"the server is receiving over {uploads.limit} bytes of "
                                   "uploads at once (--max-queue x --max-upload-mb); retry later",
                                   {"Retry-After": "1", "Connection": "close"})
            if not message.get("more_body", False):
                return b"".join(chunks)
    finally:
        uploads.bodies -= 1
        uploads.bytes -= sum(map(len, chunks))


async def image_bytes(request: Request, config: ServeConfig, uploads: Uploads) -> bytes:
    """The image of a request: the ``file`` part of a multipart form, or else the raw body (see :func:`read_body`)."""
    body = await read_body(request, config, uploads)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async def replay() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=10,
                                         max_part_size=config.max_upload_bytes).parse()
        except MultiPartException as e:
            raise ApiError(400, "bad_multipart", f"cannot parse the multipart body: {e.message}") from e
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "missing_file", "the multipart form has no file part named 'file'")
        body = await upload.read()
    if not body:
        raise ApiError(400, "empty_body", "the request has no image: send it as the body or as a form part 'file'")
    return body


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (call only once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def check_key(request: Request, key: str | None) -> None:
    """401 unless the request carries ``key`` (``Authorization: Bearer KEY`` or ``X-API-Key``), compared in
    constant time."""
    if key is None:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if given is None or not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong API key (send 'Authorization: Bearer KEY' or "
                                            "'X-API-Key: KEY')", {"WWW-Authenticate": "Bearer"})


def install_error_handlers(app: FastAPI) -> None:
    """Every error answered as JSON ``{"error", "detail"}`` (``{"error"}`` under ``/v2``), its status chosen by
    its type."""

    def answer(request: Request, status: int, code: str, detail: Any,
               headers: dict[str, str] | None = None) -> JSONResponse:
        if is_v2(request):
            return JSONResponse({"error": str(detail)}, status_code=status, headers=headers)
        return error_response(status, code, detail, headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return answer(request, e.status, e.code, e.detail, e.headers)

    @app.exception_handler(OipError)
    async def protocol_error(request: Request, e: OipError) -> JSONResponse:
        return answer(request, e.status, "bad_request", e.message)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, e: BadInput) -> JSONResponse:
        return answer(request, 400 if is_v2(request) else 422, "bad_parameter", str(e))

    @app.exception_handler(MissingExtra)
    async def missing_extra(request: Request, e: MissingExtra) -> JSONResponse:
        return answer(request, 501, "not_installed", str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return answer(request, e.status_code, "http_error", e.detail, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:  # logged by Starlette as well
        return answer(request, 500, "internal_error", f"{type(e).__name__}: {e}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return answer(request, 400 if is_v2(request) else 422, "bad_parameter", problems)


class RequestMetrics:
    """ASGI middleware counting responses by endpoint and status, and timing the inference ones (``/v1``,
    ``/v2/.../infer``)."""

    def __init__(self, app: Callable, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500
        path = scope["path"]
        endpoint = endpoint_of(path)

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.requests.inc(1, endpoint, str(status))
            if path.startswith("/v1/") or endpoint.endswith("/infer"):
                self.metrics.latency.observe(time.perf_counter() - start)
