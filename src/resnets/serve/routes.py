"""The service's URLs: each endpoint's parameters and documentation, bound to a :class:`ServeApi`."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from ..choices import METHODS
from .api import ServeApi
from .http import IMAGE_BODY, check_key, error_response

STATIC = Path(__file__).parent / "static"
# The page's Content-Security-Policy: everything from this server, the preview from a blob: URL.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def add_routes(app: FastAPI, api: ServeApi) -> None:
    """``/v1/predict``, ``/v1/features``, ``/v1/explain``, the health and metrics endpoints and the page."""

    @app.post("/v1/predict", openapi_extra=IMAGE_BODY, summary="Top classes of an image")
    async def predict(request: Request, top: int = Query(5, ge=1, le=1000, description="classes to return")):
        return await api.admitted(request, lambda data: api.predict(request, data, top))

    @app.post("/v1/features", openapi_extra=IMAGE_BODY, summary="Pooled feature vector of an image",
              description="JSON by default; with `Accept: application/octet-stream` the raw little-endian "
                          "float32 vector (its length in the `X-Feature-Dim` header).")
    async def features(request: Request,
                       layer: int | None = Query(None, description="stage to pool, 1-based (default: the last)"),
                       pooling: str = Query("avg", pattern="^(avg|max)$", description="avg or max")):
        return await api.admitted(request, lambda data: api.features(request, data, layer, pooling))

    @app.post("/v1/explain", openapi_extra=IMAGE_BODY, summary="Heat map of where the network saw a class",
              response_class=Response, responses={200: {"content": {"image/png": {}}}},
              description="The photo as the network saw it with the class activation map overlaid, as a PNG "
                          "(as `resnets explain` writes it); the class in `X-Class-Index`, `X-Class-Name` and "
                          "`X-Probability`.")
    async def explain_image(request: Request,
                            target: str | None = Query(None, description="class name or index (default: the top)"),
                            method: str = Query("gradcam", pattern=f"^({'|'.join(map(re.escape, METHODS))})$"),
                            layer: int | None = Query(None, description="stage, 1-based (default: the last)")):
        return await api.admitted(request, lambda data: api.explain(request, data, target, method, layer))

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        batcher = api.batcher
        if batcher.error is not None:
            return error_response(503, "warmup_failed", f"{type(batcher.error).__name__}: {batcher.error}")
        if not batcher.ready.is_set():
            return error_response(503, "warming_up", "the model is warming up (compiling)")
        return JSONResponse({"status": "ready", **api.names(), "max_batch": api.config.max_batch})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus(request: Request) -> PlainTextResponse:
        check_key(request, api.config.api_key)
        return PlainTextResponse(api.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
