"""``resnets serve``: an HTTP service for a model, with dynamic batching, limits, metrics and a web page.

Needs the ``serve`` extra (``pip install "resnets[serve]"``: FastAPI, uvicorn, python-multipart).
:func:`create_app` builds the ASGI application for an :class:`~resnets.pipeline.Inference`;
:class:`Batcher` is the dynamic batcher it runs the model through; :func:`background_server` serves an
app from a thread of the current process.
"""

from .app import ServeConfig, create_app
from .background import background_server
from .batcher import Batcher, BatchResult, Closed, QueueFull

__all__ = ["Batcher", "BatchResult", "Closed", "QueueFull", "ServeConfig", "background_server", "create_app"]
