"""The service's API object: what each endpoint does with an image, apart from HTTP (LitServe's split).

One :class:`ServeApi` per server holds the model cache, the :class:`Batcher` and its thread, the decode
pool, the decoding memory budget and the admission count; :mod:`.routes` binds its methods to URLs and :mod:`.app`
assembles both. Each request goes: API key (401) -> body read within size and time limits (413, 408; see
:func:`.http.read_body`) -> admission (at most ``max_queue`` inside at once, else 503 with ``Retry-After``:
counted only once the body is in, so stalled uploads never take a place) -> decode and reduce in a thread pool
within the decoding budget, exactly as ``resnets predict`` does (413 for an image over the budget, 415/422 for bad
images; see :mod:`.decoding`) -> the batcher's model thread -> post-processing on the event loop.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import torch
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.requests import ClientDisconnect

from ..classes import _id_name_pairs, class_index, decode_predictions
from ..data.images import ImageLoadError
from ..explain_images import METHOD_NAMES, explanation_panel
from ..pipeline import Inference
from .batcher import Batcher, Closed, QueueFull
from .config import ServeConfig
from .decoding import DecodingBudget, decode, decoding_bytes
from .http import ApiError, ClientGone, Uploads, check_key, client_gone, image_bytes
from .metrics import Metrics
from .models import CLASSIFY, Models, StaticBatches, batch_sizes, compiles_per_shape


@dataclass
class Ran:
    """One image through the model: its output row, the panel's view of the photo (if asked for), the input's
    shape, timings in ms."""

    output: torch.Tensor
    view: Image.Image | None
    shape: tuple[int, ...]
    timings: dict[str, float]
    batch_size: int


def sample_image() -> bytes:
    """A small PNG that warm-up decodes like an upload, so it runs the exact input shape requests will have."""
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (124, 116, 104)).save(buffer, format="PNG")
    return buffer.getvalue()


def _panel_png(view: Image.Image, heat: Any, title: str, subtitle: str) -> bytes:
    """The explanation picture of ``resnets explain`` as PNG bytes."""
    buffer = io.BytesIO()
    explanation_panel(view, heat, title, subtitle).save(buffer, format="PNG")
    return buffer.getvalue()


class ServeApi:
    """Classes, features and heat maps of uploaded images for one :class:`~resnets.pipeline.Inference`."""

    def __init__(self, inf: Inference, config: ServeConfig, metrics: Metrics) -> None:
        self.inf, self.config, self.metrics = inf, config, metrics
        _, self.pairs = _id_name_pairs(inf.classes)  # (id, name) in output order
        self.index_of = {cid: i for i, (cid, _) in enumerate(self.pairs)}
        compiled = compiles_per_shape(inf.model)
        self.sizes = batch_sizes(config.max_batch) if compiled else tuple(dict.fromkeys((config.max_batch, 1)))
        self.models = Models(inf, StaticBatches(inf.model, self.sizes) if compiled else inf.model,
                             map_sizes=tuple(dict.fromkeys((1, config.max_batch))), eager_extras=config.eager_extras)
        self.batcher = Batcher(self.models, config.max_batch, config.max_delay_ms / 1000, config.max_queue, metrics)
        self.decoder = ThreadPoolExecutor(config.workers, thread_name_prefix="resnets-decode")
        self.decoding = DecodingBudget(config.decode_memory_bytes)
        self.uploads = Uploads(config.max_queue * config.max_upload_bytes)  # bodies being read, not yet inside
        self.inside = 0  # requests admitted and not yet answered (event-loop only, so no lock)

    # --- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the model thread, warming it up at every batch size it will run."""
        sample = decode(sample_image(), self.inf).x
        key = (CLASSIFY, tuple(sample.shape))
        self.batcher.start(warmup=[(key, sample.expand(size, *sample.shape).contiguous()) for size in self.sizes])

    async def stop(self) -> None:
        """Answer what is queued, then stop the model thread and the decoders."""
        await asyncio.to_thread(self.batcher.close)
        self.decoder.shutdown(wait=True)

    def names(self) -> dict[str, Any]:
        return {"model": self.inf.name, "weights": self.inf.weights, "precision": self.config.precision,
                "backend": self.inf.backend}

    # --- the path of every request ------------------------------------------------------------------------

    async def admitted(self, request: Request, handler: Callable[[bytes], Awaitable[Response]]) -> Response:
        """Runs ``handler`` on the request's image once the API key matches (else 401), the body is in (see
        :func:`.http.read_body`) and the server has room (else 503)."""
        check_key(request, self.config.api_key)
        try:
            data = await image_bytes(request, self.config, self.uploads)
            if self.inside >= self.config.max_queue:
                raise ApiError(503, "overloaded", f"the server is full ({self.config.max_queue} requests inside, "
                                                  "--max-queue); retry later", {"Retry-After": "1"})
            self.inside += 1
            try:
                return await handler(data)
            finally:
                self.inside -= 1
        except (ClientDisconnect, ClientGone):
            return Response(status_code=499)  # nginx's "client closed request": counted, never delivered

    async def infer(self, request: Request, key: Any, data: bytes, view: bool = False) -> Ran:
        """Decode ``data`` off the event loop within the decoding budget, then run it in a batch."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            async with self.decoding.hold(decoding_bytes(data)):
                decoded = await loop.run_in_executor(self.decoder, decode, data, self.inf, view)
        except ImageLoadError as e:
            unknown = isinstance(e.__cause__, Image.UnidentifiedImageError)
            raise ApiError(415 if unknown else 422, "not_an_image" if unknown else "bad_image",
                           f"the uploaded file: {e.reason}") from e
        x, decode_end = decoded.x, time.perf_counter()
        job = asyncio.ensure_future(self.batcher.submit((key, tuple(x.shape)), x))
        gone = asyncio.ensure_future(client_gone(request))
        done, _ = await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        if job not in done:
            job.cancel()
            raise ClientGone()
        gone.cancel()
        try:
            result = job.result()  # explain's own checks (layer, CAM's conditions) raise BadInput: 422
        except (QueueFull, Closed) as e:
            raise ApiError(503, "overloaded" if isinstance(e, QueueFull) else "shutting_down", str(e),
                           {"Retry-After": "1"}) from e
        timings = {"decode": 1000 * (decode_end - start), "queue": 1000 * result.queue_s,
                   "model": 1000 * result.model_s, "total": 1000 * (time.perf_counter() - start)}
        return Ran(result.output, decoded.view, tuple(x.shape), timings, result.batch_size)

    # --- the endpoints ------------------------------------------------------------------------------------

    async def predict(self, request: Request, data: bytes, top: int) -> Response:
        ran = await self.infer(request, CLASSIFY, data)
        probs = self.inf.probabilities(ran.output[None])
        answer = decode_predictions(probs, min(top, probs.shape[1]), self.inf.classes,
                                    multi_label=self.inf.multi_label)[0]
        return JSONResponse({
            **self.names(),
            "predictions": [{"index": self.index_of[cid], "id": cid, "name": name, "probability": p}
                            for cid, name, p in answer],
            "batch_size": ran.batch_size, "timings_ms": ran.timings,
        })

    async def features(self, request: Request, data: bytes, layer: int | None, pooling: str) -> Response:
        key = await asyncio.to_thread(self.models.features, pooling, layer)  # BadInput for a bad layer: 422
        ran = await self.infer(request, key, data)
        vector = ran.output.to(torch.float32)
        if "application/octet-stream" in request.headers.get("accept", ""):
            return Response(vector.numpy().astype("<f4").tobytes(), media_type="application/octet-stream",
                            headers={"X-Feature-Dim": str(len(vector)), "X-Layer": str(key[2]),
                                     "X-Pooling": pooling})
        return JSONResponse({**self.names(), "layer": key[2], "pooling": pooling, "dim": len(vector),
                             "features": vector.tolist(), "batch_size": ran.batch_size, "timings_ms": ran.timings})

    async def explain(self, request: Request, data: bytes, target: str | None, method: str,
                      layer: int | None) -> Response:
        index = None if target is None else class_index(self.inf.classes, target)  # UnknownName: 422
        key = await asyncio.to_thread(self.models.explainer, method, layer, index)
        ran = await self.infer(request, key, data, view=True)
        found, prob = int(ran.output[0]), float(ran.output[1])
        heat = ran.output[2:].view(ran.shape[-2:]).numpy()
        name = self.pairs[found][1]
        caption = f"{METHOD_NAMES[method]}, stage {key[2]}"
        png = await asyncio.get_running_loop().run_in_executor(
            self.decoder, _panel_png, ran.view, heat, f"{name}  {prob:.1%}", caption)
        return Response(png, media_type="image/png", headers={
            "X-Class-Index": str(found), "X-Class-Name": quote(name), "X-Probability": f"{prob:.6f}"})
