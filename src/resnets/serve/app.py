"""The HTTP service assembled: a :class:`ServeApi` (its models, the request path), its routes (/v1, and the Open
Inference Protocol's /v2), limits, errors and metrics.

The server reads only the request body: it never fetches a URL or opens a path that a client names. Serve
the app with :func:`.connections.uvicorn_options` (as ``resnets serve`` and :func:`.background_server` do),
which bound how long a connection may take to send its headers or stay idle.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from fastapi import FastAPI

from ..pipeline import Inference
from .api import ServeApi
from .config import ServeConfig, served_name
from .http import RequestMetrics, install_error_handlers
from .metrics import Metrics
from .models import batch_sizes  # noqa: F401  (re-exported: the batch sizes a compiled model runs at)
from .repository import ModelSource
from .routes import add_routes, add_v2_routes
from .v2 import V2Api

log = logging.getLogger("resnets.serve")


def create_app(models: Inference | Mapping[str, ModelSource], config: ServeConfig = ServeConfig()) -> FastAPI:
    """The FastAPI application serving ``models``: one :class:`~resnets.pipeline.Inference` (named by
    :func:`.config.served_name`), or several by name, each an Inference or a function that builds one (called
    again when the model is reloaded, see :mod:`.repository`); the first answers requests that name none. The
    model threads start and warm up with the app's lifespan."""
    if isinstance(models, Inference):
        models = {served_name(models.weights, models.name): models}
    metrics = Metrics()
    api = ServeApi(models, config, metrics)
    repository = api.repository

    def queued() -> int:
        return sum(served.batcher.depth for served in repository.loaded.values())

    metrics.gauge("resnets_queue_depth", "inputs waiting for a model call, all models together", queued)
    metrics.gauge("resnets_requests_in_progress", "requests inside the server, their body in (decoding, queued, "
                                                  "in the model)", lambda: api.inside)
    metrics.gauge("resnets_uploads_in_progress", "request bodies being received", lambda: api.uploads.bodies)
    metrics.gauge("resnets_decoding_bytes", "memory held by the images being decoded (at most --decode-memory-mb)",
                  lambda: api.decoding.used)
    metrics.gauge("resnets_ready", "1 once every loaded model is warmed up",
                  lambda: int(all(served.ready for served in repository.loaded.values())))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        api.start()
        yield
        log.info("draining: %d requests queued", queued())
        await api.stop()

    first = next(iter(repository.loaded.values())).inf
    more = f" and {len(models) - 1} more models" if len(models) > 1 else ""
    app = FastAPI(title="resnets serve", version="1", lifespan=lifespan,
                  description=f"{first.name} ({first.weights or 'random weights'}), {first.precision}, "
                              f"{first.backend}{more}: classes, features and heat maps, with dynamic batching; the "
                              "Open Inference Protocol (KServe V2, Triton) under /v2.")
    app.state.metrics, app.state.config, app.state.api = metrics, config, api
    add_routes(app, api)
    add_v2_routes(app, V2Api(api))
    install_error_handlers(app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
