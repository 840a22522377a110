"""The HTTP service assembled: a :class:`ServeApi` (the model side), its routes, limits, errors and metrics.

The server reads only the request body: it never fetches a URL or opens a path that a client names. Serve
the app with :func:`.connections.uvicorn_options` (as ``resnets serve`` and :func:`.background_server` do),
which bound how long a connection may take to send its headers or stay idle.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from ..pipeline import Inference
from .api import ServeApi
from .config import ServeConfig
from .http import RequestMetrics, install_error_handlers
from .metrics import Metrics
from .models import batch_sizes  # noqa: F401  (re-exported: the batch sizes a compiled model runs at)
from .routes import add_routes

log = logging.getLogger("resnets.serve")


def create_app(inf: Inference, config: ServeConfig = ServeConfig()) -> FastAPI:
    """The FastAPI application serving ``inf``; the model thread starts and warms up with the app's lifespan."""
    metrics = Metrics()
    api = ServeApi(inf, config, metrics)
    metrics.gauge("resnets_queue_depth", "inputs waiting for a model call", lambda: api.batcher.depth)
    metrics.gauge("resnets_requests_in_progress", "requests inside the server, their body in (decoding, queued, "
                                                  "in the model)", lambda: api.inside)
    metrics.gauge("resnets_uploads_in_progress", "request bodies being received", lambda: api.uploads.bodies)
    metrics.gauge("resnets_decoding_bytes", "memory held by the images being decoded (at most --decode-memory-mb)",
                  lambda: api.decoding.used)
    metrics.gauge("resnets_ready", "1 once the model is loaded and warmed up",
                  lambda: int(api.batcher.ready.is_set()))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        api.start()
        yield
        log.info("draining: %d requests queued", api.batcher.depth)
        await api.stop()

    app = FastAPI(title="resnets serve", version="1", lifespan=lifespan,
                  description=f"{inf.name} ({inf.weights or 'random weights'}), {config.precision}, "
                              f"{inf.backend}: classes, features and heat maps, with dynamic batching.")
    app.state.batcher, app.state.metrics, app.state.config, app.state.api = api.batcher, metrics, config, api
    add_routes(app, api)
    install_error_handlers(app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
