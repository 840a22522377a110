"""The service's URLs: each endpoint's parameters and documentation, bound to a :class:`ServeApi` (and the Open
Inference Protocol's to a :class:`.v2.V2Api`)."""

from __future__ import annotations

import re
from pathlib import Path

from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from ..choices import METHODS
from .api import ServeApi
from .http import IMAGE_BODY, check_key, error_response
from .v2 import V2Api

STATIC = Path(__file__).parent / "static"
# The page's Content-Security-Policy: everything from this server, the preview from a blob: URL.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


MODEL = Query(None, description="the model to run, by name (default: the server's first)")


def add_routes(app: FastAPI, api: ServeApi) -> None:
    """``/v1/predict``, ``/v1/features``, ``/v1/explain``, the health and metrics endpoints and the page."""
    models = api.repository

    @app.post("/v1/predict", openapi_extra=IMAGE_BODY, summary="Top classes of an image")
    async def predict(request: Request, top: int = Query(5, ge=1, le=1000, description="classes to return"),
                      model: str | None = MODEL):
        served = models.get(model)
        return await api.admitted(request, lambda data: api.predict(request, served, data, top))

    @app.post("/v1/features", openapi_extra=IMAGE_BODY, summary="Pooled feature vector of an image",
              description="JSON by default; with `Accept: application/octet-stream` the raw little-endian "
                          "float32 vector (its length in the `X-Feature-Dim` header).")
    async def features(request: Request,
                       layer: int | None = Query(None, description="stage to pool, 1-based (default: the last)"),
                       pooling: str = Query("avg", pattern="^(avg|max)$", description="avg or max"),
                       model: str | None = MODEL):
        served = models.get(model)
        return await api.admitted(request, lambda data: api.features(request, served, data, layer, pooling))

    @app.post("/v1/explain", openapi_extra=IMAGE_BODY, summary="Heat map of where the network saw a class",
              response_class=Response, responses={200: {"content": {"image/png": {}}}},
              description="The photo as the network saw it with the class activation map overlaid, as a PNG "
                          "(as `resnets explain` writes it); the class in `X-Class-Index`, `X-Class-Name` and "
                          "`X-Probability`.")
    async def explain_image(request: Request,
                            target: str | None = Query(None, description="class name or index (default: the top)"),
                            method: str = Query("gradcam", pattern=f"^({'|'.join(map(re.escape, METHODS))})$"),
                            layer: int | None = Query(None, description="stage, 1-based (default: the last)"),
                            model: str | None = MODEL):
        served = models.get(model)
        return await api.admitted(request, lambda data: api.explain(request, served, data, target, method, layer))

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The models are loaded and warmed up")
    async def readyz() -> JSONResponse:
        """Ready once every loaded model is; the models (the first's names at the top, as for one model)."""
        for served in models.loaded.values():
            if served.batcher.error is not None:
                return error_response(503, "warmup_failed", f"{served.name}: {type(served.batcher.error).__name__}: "
                                                            f"{served.batcher.error}")
            if not served.ready:
                return error_response(503, "warming_up", f"{served.name} is warming up (compiling)")
        listed: dict[str, Any] = {name: served.names() for name, served in models.loaded.items()}
        first = listed.get(models.default, {})
        return JSONResponse({"status": "ready", **first, "max_batch": api.config.max_batch, "models": listed})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus(request: Request) -> PlainTextResponse:
        check_key(request, api.config.api_key)
        return PlainTextResponse(api.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def add_v2_routes(app: FastAPI, v2: V2Api) -> None:
    """The Open Inference Protocol over HTTP (KServe V2, Triton): health, server and model metadata, Triton's
    model configuration, inference, and Triton's model repository extension (index, load, unload)."""
    tag = {"tags": ["Open Inference Protocol (KServe V2, Triton)"]}

    @app.get("/v2", summary="Server metadata", **tag)
    async def server_metadata(request: Request) -> dict[str, Any]:
        return v2.server_metadata(request)

    @app.get("/v2/health/live", summary="The server is alive", **tag)
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="Every loaded model is ready", **tag)
    async def ready() -> JSONResponse:
        return v2.server_ready()

    @app.get("/v2/models", summary="The loaded models", **tag)
    async def listed(request: Request) -> dict[str, list[str]]:
        return v2.models(request)

    @app.post("/v2/repository/index", summary="Every model of the repository and its state", **tag)
    async def index(request: Request) -> JSONResponse:
        return await v2.index(request)

    @app.post("/v2/repository/models/{name}/load", summary="Load or reload a model (API key)", **tag)
    async def load(request: Request, name: str) -> JSONResponse:
        return await v2.load(request, name)

    @app.post("/v2/repository/models/{name}/unload", summary="Unload a model (API key)", **tag)
    async def unload(request: Request, name: str) -> JSONResponse:
        return await v2.load(request, name, unload=True)

    def model(request: Request) -> tuple[str, str | None]:
        return request.path_params["name"], request.path_params.get("version")

    async def metadata(request: Request) -> dict[str, Any]:
        return v2.model_metadata(request, *model(request))

    async def model_ready(request: Request) -> JSONResponse:
        return v2.model_ready(*model(request))

    async def config(request: Request) -> dict[str, Any]:
        return v2.model_config(request, *model(request))

    async def infer(request: Request) -> Response:
        return await v2.infer(request, *model(request))

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):  # the version is optional
        app.add_api_route(prefix, metadata, methods=["GET"], summary="Model metadata", **tag)
        app.add_api_route(prefix + "/ready", model_ready, methods=["GET"], summary="The model is ready", **tag)
        app.add_api_route(prefix + "/config", config, methods=["GET"], **tag,
                          summary="Triton's model configuration (each input's layout)")
        app.add_api_route(prefix + "/infer", infer, methods=["POST"], summary="Inference", **tag)
