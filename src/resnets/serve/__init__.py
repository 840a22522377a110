"""``resnets serve``: an HTTP service for models, with dynamic batching, limits, metrics and a web page; its own
JSON API under /v1 and the Open Inference Protocol (KServe V2, Triton) under /v2.

Needs the ``serve`` extra (``pip install "resnets[serve]"``: FastAPI, uvicorn, python-multipart).
:func:`create_app` builds the ASGI application for an :class:`~resnets.pipeline.Inference` (or several by name,
:mod:`.repository`) around a :class:`~resnets.serve.api.ServeApi` (the request path, the endpoints' work) and its
routes; :mod:`.oip` is the protocol's codec, :mod:`.ray_engine` runs the app as Ray Serve replicas;
:class:`Batcher` is the dynamic batcher it runs the model through; :func:`background_server` serves an
app from a thread of the current process. :class:`ServeConfig` (limits, loads without FastAPI) bounds what a
client can hold: time to send headers and body (:mod:`.connections`, :func:`.http.read_body`), places in the
queue (counted once a body is in) and memory for decoding (:mod:`.decoding`).
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ServeConfig

_LAZY = {"create_app": ".app", "background_server": ".background", "Batcher": ".batcher", "BatchResult": ".batcher",
         "Closed": ".batcher", "QueueFull": ".batcher"}

__all__ = ["Batcher", "BatchResult", "Closed", "QueueFull", "ServeConfig", "background_server", "create_app"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
