"""``resnets serve``: an HTTP service for a model, with dynamic batching, limits, metrics and a web page.

Needs the ``serve`` extra (``pip install "resnets[serve]"``: FastAPI, uvicorn, python-multipart).
:func:`create_app` builds the ASGI application for an :class:`~resnets.pipeline.Inference` around a
:class:`~resnets.serve.api.ServeApi` (the model side: cache, batcher, endpoints' work) and its routes;
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
