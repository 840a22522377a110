"""What the Open Inference Protocol's endpoints do (KServe V2, Triton's HTTP/REST; :mod:`.oip` the codec), on
the models, batchers, limits, API key and metrics of the /v1 API (:class:`.api.ServeApi`).

An inference request goes the /v1 way: API key -> body within size and time limits -> admission -> its JSON
parsed in the decode pool within the decoding budget (:data:`.decoding.JSON_BYTES_PER_BYTE` per byte of JSON)
-> each image of the batch decoded (``image``) or reduced (``pixels``) on its own within the budget, exactly as
/v1/predict does, or taken as it is (``input``) -> every image through the model's batcher (with other
requests' images, whatever their sizes before preprocessing) -> the outputs asked for. Health endpoints are open;
the rest needs the API key, and loading or unloading models needs a server started with one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import torch
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from .api import ServeApi
from .decoding import BYTES_PER_PIXEL, JSON_BYTES_PER_BYTE, decode, decode_pixels, decoding_bytes
from .http import ApiError, check_key, read_body
from .models import CLASSIFY
from .oip import (
    FEATURES, HEADER_LENGTH, IMAGE, PIXELS, PROBABILITIES, OipError, Tensor, decompress, infer_response,
    parse_infer_request, server_metadata,
)
from .repository import Served


class V2Api:
    """The Open Inference Protocol's endpoints on a :class:`.api.ServeApi`."""

    def __init__(self, api: ServeApi) -> None:
        self.api, self.repository = api, api.repository

    def served(self, request: Request, name: str, version: str | None) -> Served:
        """Model ``name`` (at ``version``) once the API key matches; 404 if there is none, 503 while unloaded."""
        check_key(request, self.api.config.api_key)
        served = self.repository.get(name)
        served.spec.check_version(version)
        return served

    # --- health and metadata --------------------------------------------------------------------------------

    def server_ready(self) -> JSONResponse:
        """200 once every loaded model has warmed up (Kubernetes' readiness probe), else 503 saying which not."""
        waiting = [name for name, served in self.repository.loaded.items() if not served.ready]
        if waiting:
            return JSONResponse({"error": f"not ready: {', '.join(waiting)}"}, status_code=503)
        return JSONResponse({"ready": True})

    def model_ready(self, name: str, version: str | None) -> JSONResponse:
        served = self.repository.get(name)
        served.spec.check_version(version)
        if not served.ready:
            why = served.batcher.error or "warming up"
            return JSONResponse({"error": f"model '{name}' is not ready: {why}"}, status_code=503)
        return JSONResponse({"name": name, "ready": True})

    def server_metadata(self, request: Request) -> dict[str, Any]:
        check_key(request, self.api.config.api_key)
        return server_metadata(__version__)

    def models(self, request: Request) -> dict[str, list[str]]:
        """The names of the loaded models (KServe's model list)."""
        check_key(request, self.api.config.api_key)
        return {"models": list(self.repository.loaded)}

    def model_metadata(self, request: Request, name: str, version: str | None) -> dict[str, Any]:
        return self.served(request, name, version).spec.metadata()

    def model_config(self, request: Request, name: str, version: str | None) -> dict[str, Any]:
        """Triton's model configuration: where each input's layout is said (``format``)."""
        return self.served(request, name, version).spec.config(round(self.api.config.max_delay_ms * 1000))

    # --- the model repository -------------------------------------------------------------------------------

    async def index(self, request: Request) -> JSONResponse:
        """Every model of the repository and its state; ``{"ready": true}`` the ready ones only."""
        check_key(request, self.api.config.api_key)
        ready = (await self._small_json(request)).get("ready", False)
        return JSONResponse([e for e in self.repository.index() if not ready or e["state"] == "READY"])

    async def load(self, request: Request, name: str, unload: bool = False) -> JSONResponse:
        """Load (or reload) or unload model ``name``: only on a server with an API key, and with that key."""
        if self.api.config.api_key is None:
            raise ApiError(403, "forbidden", "loading and unloading models needs a server started with an API key "
                                             "(--api-key, --api-key-file or RESNETS_API_KEY)")
        check_key(request, self.api.config.api_key)
        parameters = (await self._small_json(request)).get("parameters") or {}
        if not isinstance(parameters, dict) or any(k == "config" or k.startswith("file:") for k in parameters):
            raise OipError("the server loads only the models it was started with, never a file or a configuration "
                           "a client sends ('config', 'file:...' parameters)")
        await (self.repository.unload(name) if unload else self.repository.load(name))
        return JSONResponse({})

    async def _small_json(self, request: Request) -> dict[str, Any]:
        """The optional JSON object of a repository request."""
        body = await read_body(request, self.api.config, self.api.uploads)
        try:
            found = json.loads(body) if body.strip() else {}
        except ValueError as e:
            raise OipError(f"failed to parse the request JSON: {e}") from None
        if not isinstance(found, dict):
            raise OipError("the request JSON must be an object")
        return found

    # --- inference ------------------------------------------------------------------------------------------

    async def infer(self, request: Request, name: str, version: str | None) -> Response:
        self.served(request, name, version)  # 401, 404 or 503 before the body is read
        return await self.api.admitted(request, lambda body: self._infer(request, name, version, body),
                                       read=read_body)

    async def _infer(self, request: Request, name: str, version: str | None, body: bytes) -> Response:
        served = self.served(request, name, version)
        body = decompress(body, request.headers.get("content-encoding"), self.api.config.max_upload_bytes)
        length = request.headers.get(HEADER_LENGTH)
        json_size = int(length) if length is not None and length.strip().isdigit() else len(body)
        parsing = min(json_size, len(body)) * JSON_BYTES_PER_BYTE
        if parsing > self.api.decoding.total:
            raise OipError(f"parsing this request's {json_size} bytes of JSON takes about {parsing >> 20} MiB, over "
                           f"the server's decoding budget (--decode-memory-mb): send the tensors as binary data", 413)
        async with self.api.decoding.hold(parsing):
            parsed = await asyncio.get_running_loop().run_in_executor(self.api.decoder, parse_infer_request, body,
                                                                      length)
        tensor, outputs = served.spec.check(parsed)
        xs = await asyncio.gather(*(self._input(served, tensor, i) for i in range(len(tensor.data))))
        keys = {PROBABILITIES: CLASSIFY}
        if any(o.name == FEATURES for o in outputs):
            keys[FEATURES] = await asyncio.to_thread(served.models.features, "avg", None)
        wanted = [n for n in keys if any(o.name == n for o in outputs)]
        results = await self.api.run(request, served, [(keys[n], x) for n in wanted for x in xs])
        values = {}
        for i, n in enumerate(wanted):
            rows = torch.stack([r.output for r in results[i * len(xs):(i + 1) * len(xs)]])
            values[n] = (served.inf.probabilities(rows) if n == PROBABILITIES else rows).float().numpy()
        answer = [(served.spec.answer(o, values[o.name]), o.binary) for o in outputs]
        content, headers = infer_response(served.name, served.spec.version, parsed.id, answer)
        return Response(content, headers=headers)

    async def _input(self, served: Served, tensor: Tensor, i: int) -> torch.Tensor:
        """Element ``i`` of the request's input as the network's input: an image decoded, pixels reduced (both
        by the weights' recipe, within the decoding budget), or a preprocessed tensor as it is."""
        item = tensor.data[i]
        if tensor.name == IMAGE:
            return (await self.api.reduce(decoding_bytes(item), decode, item, served.inf)).x
        if tensor.name == PIXELS:
            return (await self.api.reduce(item.shape[0] * item.shape[1] * BYTES_PER_PIXEL, decode_pixels, item,
                                          served.inf)).x
        return torch.from_numpy(np.array(item, dtype=np.float32))
