"""The HTTP side of the service: reading bodies within limits, the API key, errors as JSON, request metrics.

Errors are answered by type: :class:`ApiError` as it says; the package's :class:`~resnets.errors.BadInput`
(and :class:`~resnets.errors.UnknownName`) 422, :class:`~resnets.errors.MissingExtra` 501, anything else 500.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..errors import BadInput, MissingExtra
from .metrics import Metrics

KNOWN_PATHS = ("/v1/predict", "/v1/features", "/v1/explain", "/healthz", "/readyz", "/metrics", "/", "/docs",
               "/openapi.json")
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


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": message}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def error_response(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_big = ApiError(413, "payload_too_large", f"the body is over the server's limit of {limit} bytes "
                                                  f"(--max-upload-mb {limit / 1024 / 1024:g})")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image of a request: the ``file`` part of a multipart form, or else the raw body."""
    body = await read_body(request, limit)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async def replay() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=10,
                                         max_part_size=limit).parse()
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
    """Every error answered as JSON ``{"error", "detail"}``, its status chosen by its type."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.detail, e.headers)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, e: BadInput) -> JSONResponse:
        return error_response(422, "bad_parameter", str(e))

    @app.exception_handler(MissingExtra)
    async def missing_extra(request: Request, e: MissingExtra) -> JSONResponse:
        return error_response(501, "not_installed", str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, "http_error", e.detail, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:  # logged by Starlette as well
        return error_response(500, "internal_error", f"{type(e).__name__}: {e}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return error_response(422, "bad_parameter", problems)


class RequestMetrics:
    """ASGI middleware counting responses by endpoint and status, and timing the ``/v1`` ones."""

    def __init__(self, app: Callable, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500
        path = scope["path"]
        endpoint = path if path in KNOWN_PATHS else "/static" if path.startswith("/static/") else "other"

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.requests.inc(1, endpoint, str(status))
            if path.startswith("/v1/"):
                self.metrics.latency.observe(time.perf_counter() - start)
