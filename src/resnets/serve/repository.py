"""The models one server serves, by name (Triton's model repository): each with its own precision and backend,
model cache, batcher and model thread, loaded at start and unloaded or (re)loaded at run time.

A model is given as an :class:`~resnets.pipeline.Inference` (kept: unloading stops serving it) or as a function
that builds one (called on each load, so unloading frees its memory), under a name (:func:`.config.served_name`
gives one from its weights). Requests take the model they name (the first one where they name none);
one being unloaded finishes what it has queued, and a model being reloaded serves with its old copy until the
new one has warmed up.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Mapping
from typing import Any, Union

from PIL import Image

from ..errors import BadInput
from ..classes import _id_name_pairs
from ..pipeline import Inference
from .batcher import Batcher
from .config import ServeConfig, check_name
from .decoding import decode
from .http import ApiError
from .metrics import Metrics
from .models import CLASSIFY, Models, StaticBatches, batch_sizes, compiles_per_shape
from .oip import ModelSpec

log = logging.getLogger("resnets.serve")

#: A model to serve: an Inference, or what builds one.
ModelSource = Union[Inference, Callable[[], Inference]]
#: Triton's platform names for the engines that run a model ("<project>_<format>"; informational only).
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}


def sample_image() -> bytes:
    """A small PNG that warm-up decodes like an upload, so it runs the exact input shape requests will have."""
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (124, 116, 104)).save(buffer, format="PNG")
    return buffer.getvalue()


class Served:
    """One model being served: its :class:`~resnets.pipeline.Inference`, the model cache and batcher it runs
    through (compiled ones at a few static batch sizes), and what the Open Inference Protocol shows of it."""

    def __init__(self, name: str, inf: Inference, config: ServeConfig, metrics: Metrics) -> None:
        self.name, self.inf = name, inf
        _, self.pairs = _id_name_pairs(inf.classes)  # (id, name) in output order
        self.index_of = {cid: i for i, (cid, _) in enumerate(self.pairs)}
        compiled = compiles_per_shape(inf.model)
        self.sizes = batch_sizes(config.max_batch) if compiled else tuple(dict.fromkeys((config.max_batch, 1)))
        self.models = Models(inf, StaticBatches(inf.model, self.sizes) if compiled else inf.model,
                             map_sizes=tuple(dict.fromkeys((1, config.max_batch))), eager_extras=config.eager_extras)
        self.batcher = Batcher(self.models, config.max_batch, config.max_delay_ms / 1000, config.max_queue, metrics)
        network = inf.network if inf.network is not None else inf.model
        self.spec = ModelSpec(name, tuple(n for _, n in self.pairs), getattr(network, "num_features", -1),
                              config.max_batch, PLATFORMS.get(inf.backend, "pytorch"), inf.preprocessing.crop_size)

    def start(self) -> None:
        """Start the model thread, warming it up at every batch size it will run."""
        sample = decode(sample_image(), self.inf).x
        key = (CLASSIFY, tuple(sample.shape))
        self.batcher.start(warmup=[(key, sample.expand(size, *sample.shape).contiguous()) for size in self.sizes])

    async def stop(self) -> None:
        """Answer what is queued, then stop the model thread."""
        await asyncio.to_thread(self.batcher.close)

    @property
    def ready(self) -> bool:
        return self.batcher.ready.is_set()

    def names(self) -> dict[str, Any]:
        """What the /v1 answers say of the model."""
        return {"model": self.inf.name, "weights": self.inf.weights, "precision": self.inf.precision,
                "backend": self.inf.backend}


class Repository:
    """The models of one server by name, in the order given: the loaded ones (:attr:`loaded`) and how to load
    each again."""

    def __init__(self, sources: Mapping[str, ModelSource], config: ServeConfig, metrics: Metrics) -> None:
        if not sources:
            raise BadInput("no model to serve")
        self.sources = {check_name(name): source for name, source in sources.items()}
        self.config, self.metrics = config, metrics
        self.loaded: dict[str, Served] = {name: self._build(name) for name in self.sources}
        self.failed: dict[str, str] = {}  # name -> why its last load failed
        self._locks = {name: asyncio.Lock() for name in self.sources}

    def _build(self, name: str) -> Served:
        source = self.sources[name]
        served = Served(name, source if isinstance(source, Inference) else source(), self.config, self.metrics)
        log.info("serving %s as %s", served.inf.describe(), name)
        return served

    @property
    def default(self) -> str:
        return next(iter(self.sources))

    def get(self, name: str | None) -> Served:
        """The model ``name`` (None: the first), 404 if there is no such model and 503 while it is unloaded."""
        name = self.default if name is None else name
        self._known(name)
        served = self.loaded.get(name)
        if served is None:
            raise ApiError(503, "model_unavailable", f"model {name!r} is not loaded (POST "
                                                     f"/v2/repository/models/{name}/load loads it)")
        return served

    def start(self) -> None:
        for served in self.loaded.values():
            served.start()

    async def stop(self) -> None:
        await asyncio.gather(*(served.stop() for served in self.loaded.values()))

    def _known(self, name: str) -> None:
        if name not in self.sources:
            raise ApiError(404, "unknown_model", f"no model named {name!r} (models: {', '.join(self.sources)})")

    async def load(self, name: str) -> None:
        """(Re)load model ``name``: built and warmed up off the event loop, then swapped in for the old copy,
        which finishes what it has queued. 400 naming the cause if it fails (the old copy, if any, serves on)."""
        self._known(name)
        async with self._locks[name]:
            try:
                served = await asyncio.to_thread(self._build, name)
                served.start()
                await asyncio.to_thread(served.batcher.ready.wait)
            except Exception as e:  # noqa: BLE001 - any failure to build is the load's answer
                self.failed[name] = f"{type(e).__name__}: {e}"
                raise ApiError(400, "load_failed", f"failed to load {name!r}: {self.failed[name]}") from e
            if served.batcher.error is not None:
                await served.stop()
                self.failed[name] = f"warm-up failed: {served.batcher.error}"
                raise ApiError(400, "load_failed", f"failed to load {name!r}: {self.failed[name]}")
            old, self.loaded[name] = self.loaded.get(name), served
            self.loaded = {n: self.loaded[n] for n in self.sources if n in self.loaded}  # the given order
            self.failed.pop(name, None)
            if old is not None:
                await old.stop()

    async def unload(self, name: str) -> None:
        """Stop serving model ``name`` (404 if there is no such model; nothing to do if it is not loaded); what it
        has queued is answered first."""
        self._known(name)
        async with self._locks[name]:
            served = self.loaded.pop(name, None)
            if served is not None:
                await served.stop()
                log.info("unloaded model %s", name)

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every model, its version and state (``READY``, ``LOADING`` while it warms
        up, ``UNAVAILABLE`` with the reason)."""
        entries = []
        for name in self.sources:
            served = self.loaded.get(name)
            if served is None:
                state, reason = "UNAVAILABLE", self.failed.get(name, "unloaded")
            elif served.batcher.error is not None:
                state, reason = "UNAVAILABLE", f"warm-up failed: {served.batcher.error}"
            else:
                state, reason = ("READY" if served.ready else "LOADING"), ""
            entries.append({"name": name, "version": ModelSpec.version, "state": state, "reason": reason})
        return entries
