"""The service's API object: what each endpoint does with an image, apart from HTTP (LitServe's split).

One :class:`ServeApi` per server holds the models (a :class:`.repository.Repository`: each model's cache,
batcher and thread), the decode pool, the decoding memory budget and the admission count; :mod:`.routes` binds its
methods to URLs (:mod:`.v2` the Open Inference Protocol's) and :mod:`.app` assembles both. Each request goes: API
key (401) -> body read within size and time limits (413, 408; see :func:`.http.read_body`) -> admission (at most
``max_queue`` inside at once, else 503 with ``Retry-After``: counted only once the body is in, so stalled uploads
never take a place) -> decode and reduce in a thread pool within the decoding budget, exactly as ``resnets
predict`` does (413 for an image over the budget, 415/422 for bad images; see :mod:`.decoding`), each image on its
own, so images of any size share batches once preprocessed -> the model's batcher thread -> post-processing on the
event loop.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import torch
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.requests import ClientDisconnect

from ..classes import class_index, decode_predictions
from ..data.images import ImageLoadError
from ..explain_images import METHOD_NAMES, explanation_panel
from .batcher import BatchResult, Closed, QueueFull
from .config import ServeConfig
from .decoding import Decoded, DecodingBudget, decode, decoding_bytes
from .http import ApiError, ClientGone, Uploads, check_key, client_gone, image_bytes
from .metrics import Metrics
from .models import CLASSIFY
from .repository import ModelSource, Repository, Served


@dataclass
class Ran:
    """One image through the model: its output row, the panel's view of the photo (if asked for), the input's
    shape, timings in ms."""

    output: torch.Tensor
    view: Image.Image | None
    shape: tuple[int, ...]
    timings: dict[str, float]
    batch_size: int


def _panel_png(view: Image.Image, heat: Any, title: str, subtitle: str) -> bytes:
    """The explanation picture of ``resnets explain`` as PNG bytes."""
    buffer = io.BytesIO()
    explanation_panel(view, heat, title, subtitle).save(buffer, format="PNG")
    return buffer.getvalue()


class ServeApi:
    """Classes, features and heat maps of uploaded images for the models of a :class:`.repository.Repository`."""

    def __init__(self, models: Mapping[str, ModelSource], config: ServeConfig, metrics: Metrics) -> None:
        self.config, self.metrics = config, metrics
        self.repository = Repository(models, config, metrics)
        self.decoder = ThreadPoolExecutor(config.workers, thread_name_prefix="resnets-decode")
        self.decoding = DecodingBudget(config.decode_memory_bytes)
        self.uploads = Uploads(config.max_queue * config.max_upload_bytes)  # bodies being read, not yet inside
        self.inside = 0  # requests admitted and not yet answered (event-loop only, so no lock)

    # --- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every model's thread, each warming up at every batch size it will run."""
        self.repository.start()

    async def stop(self) -> None:
        """Answer what is queued, then stop the model threads and the decoders."""
        await self.repository.stop()
        self.decoder.shutdown(wait=True)

    # --- the path of every request ------------------------------------------------------------------------

    async def admitted(self, request: Request, handler: Callable[[bytes], Awaitable[Response]],
                       read: Callable[..., Awaitable[bytes]] = image_bytes) -> Response:
        """Runs ``handler`` on the request's body (``read``: the image of a /v1 request) once the API key matches
        (else 401), the body is in (see :func:`.http.read_body`) and the server has room (else 503)."""
        check_key(request, self.config.api_key)
        try:
            data = await read(request, self.config, self.uploads)
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

    async def reduce(self, size: int, work: Callable[..., Decoded], *args: Any) -> Decoded:
        """``work(*args)`` (decoding an image to the network's input) in the decode pool, holding ``size`` bytes
        of the decoding budget meanwhile; a bad image is 415 (not an image) or 422 (damaged)."""
        try:
            async with self.decoding.hold(size):
                return await asyncio.get_running_loop().run_in_executor(self.decoder, work, *args)
        except ImageLoadError as e:
            unknown = isinstance(e.__cause__, Image.UnidentifiedImageError)
            raise ApiError(415 if unknown else 422, "not_an_image" if unknown else "bad_image",
                           f"the uploaded file: {e.reason}") from e

    async def run(self, request: Request, served: Served,
                  jobs: Sequence[tuple[Any, torch.Tensor]]) -> list[BatchResult]:
        """Each ``(key, input)`` through ``served``'s batcher, all at once; the client leaving first cancels them
        (so they cost no batch anything)."""
        futures = [asyncio.ensure_future(served.batcher.submit((key, tuple(x.shape)), x)) for key, x in jobs]
        every = asyncio.gather(*futures)
        gone = asyncio.ensure_future(client_gone(request))
        done, _ = await asyncio.wait({every, gone}, return_when=asyncio.FIRST_COMPLETED)
        if every not in done:
            every.cancel()
            raise ClientGone()
        gone.cancel()
        try:
            return every.result()  # explain's own checks (layer, CAM's conditions) raise BadInput: 422
        except (QueueFull, Closed) as e:
            for future in futures:
                future.cancel()
            raise ApiError(503, "overloaded" if isinstance(e, QueueFull) else "shutting_down", str(e),
                           {"Retry-After": "1"}) from e

    async def infer(self, request: Request, served: Served, key: Any, data: bytes, view: bool = False) -> Ran:
        """Decode ``data`` for ``served`` off the event loop within the decoding budget, then run it in a batch."""
        start = time.perf_counter()
        decoded = await self.reduce(decoding_bytes(data), decode, data, served.inf, view)
        x, decode_end = decoded.x, time.perf_counter()
        (result,) = await self.run(request, served, [(key, x)])
        timings = {"decode": 1000 * (decode_end - start), "queue": 1000 * result.queue_s,
                   "model": 1000 * result.model_s, "total": 1000 * (time.perf_counter() - start)}
        return Ran(result.output, decoded.view, tuple(x.shape), timings, result.batch_size)

    # --- the endpoints ------------------------------------------------------------------------------------

    async def predict(self, request: Request, served: Served, data: bytes, top: int) -> Response:
        ran = await self.infer(request, served, CLASSIFY, data)
        inf = served.inf
        probs = inf.probabilities(ran.output[None])
        answer = decode_predictions(probs, min(top, probs.shape[1]), inf.classes, multi_label=inf.multi_label)[0]
        return JSONResponse({
            **served.names(),
            "predictions": [{"index": served.index_of[cid], "id": cid, "name": name, "probability": p}
                            for cid, name, p in answer],
            "batch_size": ran.batch_size, "timings_ms": ran.timings,
        })

    async def features(self, request: Request, served: Served, data: bytes, layer: int | None,
                       pooling: str) -> Response:
        key = await asyncio.to_thread(served.models.features, pooling, layer)  # BadInput for a bad layer: 422
        ran = await self.infer(request, served, key, data)
        vector = ran.output.to(torch.float32)
        if "application/octet-stream" in request.headers.get("accept", ""):
            return Response(vector.numpy().astype("<f4").tobytes(), media_type="application/octet-stream",
                            headers={"X-Feature-Dim": str(len(vector)), "X-Layer": str(key[2]),
                                     "X-Pooling": pooling})
        return JSONResponse({**served.names(), "layer": key[2], "pooling": pooling, "dim": len(vector),
                             "features": vector.tolist(), "batch_size": ran.batch_size, "timings_ms": ran.timings})

    async def explain(self, request: Request, served: Served, data: bytes, target: str | None, method: str,
                      layer: int | None) -> Response:
        index = None if target is None else class_index(served.inf.classes, target)  # UnknownName: 422
        key = await asyncio.to_thread(served.models.explainer, method, layer, index)
        ran = await self.infer(request, served, key, data, view=True)
        found, prob = int(ran.output[0]), float(ran.output[1])
        heat = ran.output[2:].view(ran.shape[-2:]).numpy()
        name = served.pairs[found][1]
        caption = f"{METHOD_NAMES[method]}, stage {key[2]}"
        png = await asyncio.get_running_loop().run_in_executor(
            self.decoder, _panel_png, ran.view, heat, f"{name}  {prob:.1%}", caption)
        return Response(png, media_type="image/png", headers={
            "X-Class-Index": str(found), "X-Class-Name": quote(name), "X-Probability": f"{prob:.6f}"})
