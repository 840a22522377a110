"""The HTTP service: routes, limits, errors, the web page and metrics around a :class:`Batcher`.

Each request goes: admission (at most ``max_queue`` requests inside at once, else 503 with
``Retry-After``) -> body read with a size limit (413) -> decode and preprocess in a thread pool,
exactly as ``resnets predict`` does (415/422 for bad images) -> the batcher's model thread ->
post-processing on the event loop. The server reads only the request body: it never fetches a
URL or opens a path that a client names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from torch import nn

from .. import create_model
from ..classes import _id_name_pairs, class_index, decode_predictions
from ..data.images import ImageLoadError, load_img
from ..explain import METHODS, explain
from ..explain_images import METHOD_NAMES, explanation_panel
from ..pipeline import Inference, StageFeatures, probabilities
from .batcher import Batcher, Closed, QueueFull
from .metrics import Metrics

log = logging.getLogger("resnets.serve")
STATIC = Path(__file__).parent / "static"
CLASSIFY = "classify"
# The page's Content-Security-Policy: everything from this server, the preview from a blob: URL.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
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


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of one server (the ``resnets serve`` options)."""

    max_batch: int = 16
    max_delay_ms: float = 5.0
    max_queue: int = 64  # requests inside the server at once: read, decoded, waiting or in the model
    max_upload_mb: float = 20.0
    api_key: str | None = None
    workers: int = 2  # threads decoding and preprocessing images
    precision: str = "fp32"
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_delay_ms < 0 or self.max_queue < 1 or self.workers < 1:
            raise ValueError("need --max-batch >= 1, --max-delay-ms >= 0, --max-queue >= 1 and --workers >= 1")
        if self.max_upload_mb <= 0:
            raise ValueError(f"--max-upload-mb must be positive, got {self.max_upload_mb}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("--api-key must not be empty")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": message}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def _error_response(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class _ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class Models:
    """Key -> module for the model thread: the classifier, and feature extractors and explainers built on
    first use.

    Those run the eager fp32 network (exact, as ``resnets features`` and ``resnets explain`` at fp32):
    the served model itself when it is eager, else one eager copy loaded once and shared by them all.
    """

    def __init__(self, inf: Inference, classifier: nn.Module) -> None:
        self.inf, self.classifier = inf, classifier
        self._eager: nn.Module | None = inf.model if hasattr(inf.model, "stage_names") else None
        self._extra: dict[tuple, nn.Module] = {}
        self._lock = threading.Lock()

    def __call__(self, key: Any) -> nn.Module:
        kind = key[0]
        return self.classifier if kind == CLASSIFY else self._extra[kind]

    def eager(self) -> nn.Module:
        """The eager network (blocking: loads it the first time)."""
        with self._lock:
            if self._eager is None:
                log.info("loading an eager fp32 %s for /v1/features", self.inf.name)
                self._eager = create_model(self.inf.name, weights=self.inf.weights).eval()
            return self._eager

    def features(self, pooling: str, layer: int | None) -> tuple[str, int]:
        """The key of the extractor for ``pooling`` and ``layer`` (None: last stage), created if new."""
        model = self.eager()
        extractor = StageFeatures(model, layer, pooling).eval()  # validates both, naming the bad one
        key = ("features", pooling, extractor.stage)
        self._extra.setdefault(key, extractor)
        return key

    def explainer(self, method: str, layer: int | None, target: int | None) -> tuple:
        """The key of the :class:`ExplainMaps` for these arguments, created if new."""
        key = ("explain", method, layer, target)
        self._extra.setdefault(key, ExplainMaps(self.eager(), method, layer, target))
        return key


class ExplainMaps(nn.Module):
    """:func:`resnets.explain.explain` as a module the batcher can run: per image one row of
    ``(class, probability, heat map flattened)``."""

    def __init__(self, model: nn.Module, method: str, layer: int | None, target: int | None) -> None:
        super().__init__()
        self.model, self.method, self.layer, self.target = model, method, layer, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        found = explain(self.model, x, self.target, self.method, self.layer)
        return torch.cat([found.classes[:, None].float(), found.probabilities[:, None].float(),
                          found.maps.flatten(1).float()], dim=1)


def batch_sizes(max_batch: int, most: int = 8) -> tuple[int, ...]:
    """The batch sizes a compiled model runs at: powers of two below ``max_batch``, and ``max_batch``.

    At most ``most`` (the largest ones; smaller batches pad up to the smallest): torch.compile keeps
    8 graphs per function by default, then falls back to eager.
    """
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch] + [max_batch]
    return tuple(sizes[-most:])


class StaticBatches(nn.Module):
    """Runs a compiled model at fixed batch sizes only, each compiled once as its own static-shape graph.

    A batch is padded with zeros up to the next size and the padding's rows dropped (in eval mode a
    row's output depends on that row alone). Why: left alone, torch.compile turns a second batch size
    into one dynamic-shape graph for all sizes, which ran int8 ResNet-50 at about half the speed of
    static graphs (measured at batch 2 to 16 on the project's 2-core CPU; see the README's Serving).
    """

    def __init__(self, model: nn.Module, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.sizes = model, sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        size = next(s for s in self.sizes if s >= n)
        if size > n:
            x = torch.cat([x, x.new_zeros(size - n, *x.shape[1:])])
        with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
            return self.model(x)[:n]


@dataclass
class Ran:
    """One image through the model: its output row, the photo (if kept), the input's shape, timings in ms."""

    output: torch.Tensor
    photo: Image.Image | None
    shape: tuple[int, ...]
    timings: dict[str, float]
    batch_size: int


def _panel_png(photo: Image.Image, heat: Any, inf: Inference, title: str, subtitle: str) -> bytes:
    """The explanation picture of ``resnets explain`` as PNG bytes."""
    buffer = io.BytesIO()
    explanation_panel(photo, heat, inf.preprocessing, title, subtitle).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(data: bytes, inf: Inference, keep_photo: bool = False) -> tuple[Image.Image | None, torch.Tensor]:
    """One uploaded image as the network's input: the same ``load_img`` + recipe as ``resnets predict``;
    and the photo itself if ``keep_photo`` (else it is freed at once: it can be far larger than the input)."""
    photo = load_img(io.BytesIO(data))
    return photo if keep_photo else None, inf.preprocessing(photo)


async def _read_body(request: Request, limit: int) -> bytes:
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


async def _image_bytes(request: Request, limit: int) -> bytes:
    """The image of a request: the ``file`` part of a multipart form, or else the raw body."""
    body = await _read_body(request, limit)
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


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (call only once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(inf: Inference, config: ServeConfig = ServeConfig()) -> FastAPI:
    """The FastAPI application serving ``inf``; the model thread starts and warms up with the app's lifespan."""
    metrics = Metrics()
    _, pairs = _id_name_pairs(inf.classes)  # (id, name) in output order
    index_of = {cid: i for i, (cid, _) in enumerate(pairs)}
    compiled = bool(getattr(inf.model, "compiled", False))  # resnets.optimize's compiled models
    sizes = batch_sizes(config.max_batch) if compiled else tuple(dict.fromkeys((config.max_batch, 1)))
    models = Models(inf, StaticBatches(inf.model, sizes) if compiled else inf.model)
    batcher = Batcher(models, config.max_batch, config.max_delay_ms / 1000, config.max_queue, metrics)
    decoder = ThreadPoolExecutor(config.workers, thread_name_prefix="resnets-decode")
    inside = 0  # requests admitted and not yet answered (event-loop only, so no lock)
    metrics.gauge("resnets_queue_depth", "inputs waiting for a model call", lambda: batcher.depth)
    metrics.gauge("resnets_requests_in_progress", "requests inside the server (reading, decoding, queued, in the "
                                                  "model)", lambda: inside)
    metrics.gauge("resnets_ready", "1 once the model is loaded and warmed up", lambda: int(batcher.ready.is_set()))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _, sample = _decode(_sample_image(), inf)
        key = (CLASSIFY, tuple(sample.shape))
        batcher.start(warmup=[(key, sample.expand(size, *sample.shape).contiguous()) for size in sizes])
        yield
        log.info("draining: %d requests queued", batcher.depth)
        await asyncio.to_thread(batcher.close)
        decoder.shutdown(wait=True)

    app = FastAPI(title="resnets serve", version="1", lifespan=lifespan,
                  description=f"{inf.name} ({inf.weights or 'random weights'}), {config.precision}, "
                              f"{config.backend}: classes, features and heat maps, with dynamic batching.")
    app.state.batcher, app.state.metrics, app.state.config = batcher, metrics, config

    async def _admitted(request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
        """Runs ``handler`` if the server has room (else 503) and the API key matches (else 401)."""
        nonlocal inside
        _check_key(request, config.api_key)
        if inside >= config.max_queue:
            raise ApiError(503, "overloaded", f"the server is full ({config.max_queue} requests inside, "
                                              "--max-queue); retry later", {"Retry-After": "1"})
        inside += 1
        try:
            return await handler()
        except (ClientDisconnect, _ClientGone):
            return Response(status_code=499)  # nginx's "client closed request": counted, never delivered
        finally:
            inside -= 1

    async def _infer(request: Request, key: Any, data: bytes, keep_photo: bool = False) -> Ran:
        """Decode ``data`` off the event loop, then run it in a batch."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            photo, x = await loop.run_in_executor(decoder, _decode, data, inf, keep_photo)
        except ImageLoadError as e:
            unknown = isinstance(e.__cause__, Image.UnidentifiedImageError)
            raise ApiError(415 if unknown else 422, "not_an_image" if unknown else "bad_image",
                           f"the uploaded file: {e.reason}") from e
        decoded = time.perf_counter()
        job = asyncio.ensure_future(batcher.submit((key, tuple(x.shape)), x))
        gone = asyncio.ensure_future(_client_gone(request))
        done, _ = await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        if job not in done:
            job.cancel()
            raise _ClientGone()
        gone.cancel()
        try:
            result = job.result()
        except (QueueFull, Closed) as e:
            raise ApiError(503, "overloaded" if isinstance(e, QueueFull) else "shutting_down", str(e),
                           {"Retry-After": "1"}) from e
        except ValueError as e:
            if key[0] != "explain":
                raise
            raise ApiError(422, "bad_parameter", str(e)) from e  # explain's own checks (layer, CAM's conditions)
        timings = {"decode": 1000 * (decoded - start), "queue": 1000 * result.queue_s,
                   "model": 1000 * result.model_s, "total": 1000 * (time.perf_counter() - start)}
        return Ran(result.output, photo, tuple(x.shape), timings, result.batch_size)

    def _names() -> dict[str, Any]:
        return {"model": inf.name, "weights": inf.weights, "precision": config.precision, "backend": config.backend}

    @app.post("/v1/predict", openapi_extra=IMAGE_BODY, summary="Top classes of an image")
    async def predict(request: Request, top: int = Query(5, ge=1, le=1000, description="classes to return")):
        async def handle() -> Response:
            data = await _image_bytes(request, config.max_upload_bytes)
            ran = await _infer(request, CLASSIFY, data)
            out = ran.output
            probs = probabilities(inf.model, out[None])
            answer = decode_predictions(probs, min(top, probs.shape[1]), inf.classes)[0]
            return JSONResponse({
                **_names(),
                "predictions": [{"index": index_of[cid], "id": cid, "name": name, "probability": p}
                                for cid, name, p in answer],
                "batch_size": ran.batch_size, "timings_ms": ran.timings,
            })
        return await _admitted(request, handle)

    @app.post("/v1/features", openapi_extra=IMAGE_BODY, summary="Pooled feature vector of an image",
              description="JSON by default; with `Accept: application/octet-stream` the raw little-endian "
                          "float32 vector (its length in the `X-Feature-Dim` header).")
    async def features(request: Request,
                       layer: int | None = Query(None, description="stage to pool, 1-based (default: the last)"),
                       pooling: str = Query("avg", pattern="^(avg|max)$", description="avg or max")):
        async def handle() -> Response:
            try:
                key = await asyncio.to_thread(models.features, pooling, layer)
            except ValueError as e:
                raise ApiError(422, "bad_parameter", str(e)) from e
            data = await _image_bytes(request, config.max_upload_bytes)
            ran = await _infer(request, key, data)
            vector = ran.output.to(torch.float32)
            if "application/octet-stream" in request.headers.get("accept", ""):
                return Response(vector.numpy().astype("<f4").tobytes(), media_type="application/octet-stream",
                                headers={"X-Feature-Dim": str(len(vector)), "X-Layer": str(key[2]),
                                         "X-Pooling": pooling})
            return JSONResponse({**_names(), "layer": key[2], "pooling": pooling, "dim": len(vector),
                                 "features": vector.tolist(), "batch_size": ran.batch_size,
                                 "timings_ms": ran.timings})
        return await _admitted(request, handle)

    @app.post("/v1/explain", openapi_extra=IMAGE_BODY, summary="Heat map of where the network saw a class",
              response_class=Response, responses={200: {"content": {"image/png": {}}}},
              description="The photo as the network saw it with the class activation map overlaid, as a PNG "
                          "(as `resnets explain` writes it); the class in `X-Class-Index`, `X-Class-Name` and "
                          "`X-Probability`.")
    async def explain_image(request: Request,
                            target: str | None = Query(None, description="class name or index (default: the top)"),
                            method: str = Query("gradcam", pattern=f"^({'|'.join(map(re.escape, METHODS))})$"),
                            layer: int | None = Query(None, description="stage, 1-based (default: the last)")):
        async def handle() -> Response:
            try:
                index = None if target is None else class_index(inf.classes, target)
            except ValueError as e:
                raise ApiError(422, "bad_parameter", str(e)) from e
            key = await asyncio.to_thread(models.explainer, method, layer, index)
            data = await _image_bytes(request, config.max_upload_bytes)
            ran = await _infer(request, key, data, keep_photo=True)
            found, prob = int(ran.output[0]), float(ran.output[1])
            heat = ran.output[2:].view(ran.shape[-2:]).numpy()
            name = pairs[found][1]
            stage = layer or len(models.eager().stage_names)
            caption = f"{METHOD_NAMES[method]}, stage {stage}"
            png = await asyncio.get_running_loop().run_in_executor(
                decoder, _panel_png, ran.photo, heat, inf, f"{name}  {prob:.1%}", caption)
            return Response(png, media_type="image/png", headers={
                "X-Class-Index": str(found), "X-Class-Name": quote(name), "X-Probability": f"{prob:.6f}"})
        return await _admitted(request, handle)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        if batcher.error is not None:
            return _error_response(503, "warmup_failed", f"{type(batcher.error).__name__}: {batcher.error}")
        if not batcher.ready.is_set():
            return _error_response(503, "warming_up", "the model is warming up (compiling)")
        return JSONResponse({"status": "ready", **_names(), "max_batch": config.max_batch})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus(request: Request) -> PlainTextResponse:
        _check_key(request, config.api_key)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error_response(e.status, e.code, e.detail, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error_response(e.status_code, "http_error", e.detail, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:  # logged by Starlette as well
        return _error_response(500, "internal_error", f"{type(e).__name__}: {e}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return _error_response(422, "bad_parameter", problems)

    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


def _check_key(request: Request, key: str | None) -> None:
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


def _sample_image() -> bytes:
    """A small PNG that warm-up decodes like an upload, so it runs the exact input shape requests will have."""
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (124, 116, 104)).save(buffer, format="PNG")
    return buffer.getvalue()


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
