"""``resnets serve``: an HTTP service for a model, with dynamic batching, limits, metrics and a web page.

Needs the ``serve`` extra (``pip install "resnets[serve]"``: FastAPI, uvicorn, python-multipart).
:func:`create_app` builds the ASGI application for an :class:`~resnets.pipeline.Inference`;
:class:`Batcher` is the dynamic batcher it runs the model through.
"""

from .app import ServeConfig, create_app
from .batcher import Batcher, BatchResult, Closed, QueueFull

__all__ = ["Batcher", "BatchResult", "Closed", "QueueFull", "ServeConfig", "create_app"]
