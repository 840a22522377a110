"""The Open Inference Protocol (KServe's V2, Triton's HTTP/REST) for the service's classifiers, apart from HTTP.

Requests are parsed as the protocol and Triton's extensions define them (the same bodies ``tritonclient.http``
builds): the JSON inference header, followed by binary tensor data when the ``Inference-Header-Content-Length``
header says where the JSON ends (each binary input's size in its ``parameters.binary_data_size``, ``BYTES``
elements as a 4-byte little-endian length and the bytes); a raw binary request (that header 0) is one encoded
image. A served classifier (:class:`ModelSpec`) takes exactly one of three inputs, its layout said in its
metadata and Triton model configuration: ``image`` (``BYTES``, one encoded image per batch element), ``pixels``
(``UINT8`` RGB pixels, NHWC, any size; the weights' resize and crop apply) or ``input`` (``FP32``, NCHW, the
network's input, preprocessed). It answers ``probabilities`` (``FP32``), as top-k ``BYTES`` strings
``"score:index:label"`` when an output asks for ``classification`` (Triton's classification extension), and the
pooled ``features`` when asked for. Outputs go back as JSON or, when asked (``binary_data``,
``binary_data_output``), appended as binary data. Errors are :class:`OipError`: ``{"error": message}`` with an
HTTP status (400 unless said otherwise), as the protocol says.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ResnetsError

import numpy as np

#: The header giving the length of the JSON part of a body followed by binary tensor data.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: What the server supports beyond the core protocol, as Triton names it in its server metadata.
EXTENSIONS = ("binary_tensor_data", "classification", "model_repository", "model_configuration")
#: The protocol's tensor data types as little-endian numpy types (BYTES: Python bytes objects).
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
    "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "BYTES": object,
}
#: The inputs of a served classifier (give exactly one) and its outputs.
IMAGE, PIXELS, INPUT = "image", "pixels", "input"
PROBABILITIES, FEATURES = "probabilities", "features"


class OipError(ResnetsError):
    """A request the protocol refuses: answered ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status

    def body(self) -> dict[str, str]:
        return {"error": self.message}


@dataclass
class Tensor:
    """One named tensor of a request or a response: numeric data in its numpy type, ``BYTES`` as an object array
    of ``bytes``, shaped as ``shape``."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass(frozen=True)
class Requested:
    """An output a request asks for: as binary data or JSON, and as the top ``classification`` classes (0: the
    tensor itself)."""

    name: str
    binary: bool = False
    classification: int = 0


@dataclass
class InferRequest:
    """A parsed inference request. ``outputs`` is None where the request names none (the model's default
    ones, as binary data if ``binary_output``)."""

    inputs: list[Tensor]
    outputs: list[Requested] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False


# --- requests ----------------------------------------------------------------------------------------------------

def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` as sent with ``Content-Encoding: encoding`` (gzip or deflate, as ``tritonclient`` compresses
    requests), never inflated past ``limit`` bytes (413 beyond)."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    wbits = {"gzip": 31, "deflate": 15}.get(encoding.strip().lower())
    if wbits is None:
        raise OipError(f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or none", 415)
    inflate = zlib.decompressobj(wbits)
    try:
        data = inflate.decompress(body, limit + 1)
    except zlib.error as e:
        raise OipError(f"cannot decompress the {encoding} body: {e}") from None
    if len(data) > limit or inflate.unconsumed_tail:
        raise OipError(f"the body inflates to over the server's limit of {limit} bytes", 413)
    if not inflate.eof:
        raise OipError(f"the {encoding} body is truncated")
    return data


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """The inference request in ``body``: all JSON, or (``header_length``, the value of the
    ``Inference-Header-Content-Length`` header) its first ``header_length`` bytes JSON and the rest the inputs'
    binary data in their order; ``"0"``: a raw binary request, the whole body one encoded image."""
    if header_length is None:
        split = len(body)
    else:
        if not header_length.strip().isdigit():
            raise OipError(f"unable to parse {HEADER_LENGTH}, got {header_length!r}")
        split = int(header_length)
        if split > len(body):
            raise OipError(f"{HEADER_LENGTH} {split} is over the body's length {len(body)}")
        if split == 0:
            return InferRequest([Tensor(IMAGE, "BYTES", np.array([body], dtype=object))], binary_output=True)
    try:
        header = json.loads(body[:split])
    except (ValueError, UnicodeDecodeError) as e:
        raise OipError(f"failed to parse the request JSON: {e}") from None
    if not isinstance(header, dict):
        raise OipError("the request JSON must be an object")
    parameters = _object(header.get("parameters", {}), "the request's 'parameters'")
    binary_output = _flag(parameters.get("binary_data_output", False), "binary_data_output")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OipError("the request has no 'inputs'")
    binary, offset, tensors = memoryview(body)[split:], 0, []
    for entry in inputs:
        tensor, offset = _input(entry, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise OipError(f"the body holds {len(binary) - offset} bytes of binary data beyond the inputs' "
                       "binary_data_size")
    outputs = header.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise OipError("the request's 'outputs' must be a list")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError("the request's 'id' must be a string")
    return InferRequest(tensors, None if outputs is None else [_output(o, binary_output) for o in outputs],
                        request_id, parameters, binary_output)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OipError(f"{what} must be a JSON object")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise OipError(f"unable to parse '{name}': expected true or false, got {value!r}")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OipError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _input(entry: Any, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    """One ``inputs`` entry as a :class:`Tensor`, its binary data read from ``binary`` at ``offset``; and the
    offset after it."""
    entry = _object(entry, "each of 'inputs'")
    name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
    if not isinstance(name, str):
        raise OipError("an input has no 'name'")
    if datatype not in DATATYPES:
        raise OipError(f"input '{name}': unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")
    if not isinstance(shape, list):
        raise OipError(f"input '{name}' has no 'shape'")
    shape = tuple(_count(d, f"input '{name}': each dimension of 'shape'") for d in shape)
    parameters = _object(entry.get("parameters", {}), f"input '{name}': 'parameters'")
    elements = math.prod(shape)
    if "binary_data_size" in parameters:
        if "data" in entry:
            raise OipError(f"input '{name}' has both 'data' and 'binary_data_size'")
        size = _count(parameters["binary_data_size"], f"input '{name}': 'binary_data_size'")
        if offset + size > len(binary):
            raise OipError(f"input '{name}': binary_data_size {size} is over the binary data left in the body "
                           f"({len(binary) - offset} bytes)")
        raw = binary[offset:offset + size]
        if datatype == "BYTES":
            data = _bytes_elements(raw, name)
        else:
            itemsize = np.dtype(DATATYPES[datatype]).itemsize
            if size != elements * itemsize:
                raise OipError(f"input '{name}': {size} bytes of binary data for shape {list(shape)} of "
                               f"{datatype}, expected {elements * itemsize}")
            data = np.frombuffer(raw, dtype=DATATYPES[datatype])
        offset += size
    elif "data" in entry:
        data = _json_data(entry["data"], datatype, name, parameters)
    else:
        raise OipError(f"input '{name}' has neither 'data' nor 'binary_data_size'")
    if data.size != elements:
        raise OipError(f"input '{name}': {data.size} elements for shape {list(shape)}, expected {elements}")
    return Tensor(name, datatype, data.reshape(shape), parameters), offset


def _bytes_elements(raw: memoryview, name: str) -> np.ndarray:
    """``BYTES`` binary data (each element: its length as a 4-byte little-endian integer, then its bytes)."""
    elements, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise OipError(f"input '{name}': BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, at)
        if at + 4 + length > len(raw):
            raise OipError(f"input '{name}': a BYTES element of {length} bytes runs past its binary data")
        elements.append(bytes(raw[at + 4:at + 4 + length]))
        at += 4 + length
    out = np.empty(len(elements), dtype=object)
    out[:] = elements
    return out


def _json_data(data: Any, datatype: str, name: str, parameters: dict[str, Any]) -> np.ndarray:
    """Tensor data given in JSON (nested or flat lists; a ``BYTES`` element a string, base64 where the input's
    ``parameters.content_type`` is ``"base64"``, as Seldon MLServer sends binary in JSON)."""
    if datatype == "BYTES":
        try:
            strings = np.asarray(data, dtype=object).ravel()
        except ValueError as e:
            raise OipError(f"input '{name}': its data is not a tensor of strings ({e})") from None
        if not all(isinstance(s, str) for s in strings):
            raise OipError(f"input '{name}': BYTES data in JSON must be strings")
        b64 = parameters.get("content_type") == "base64"
        out = np.empty(len(strings), dtype=object)
        try:
            out[:] = [base64.b64decode(s, validate=True) if b64 else s.encode() for s in strings]
        except ValueError as e:
            raise OipError(f"input '{name}': not base64 ({e})") from None
        return out
    try:
        array = np.asarray(data, dtype=DATATYPES[datatype])
    except (ValueError, TypeError, OverflowError) as e:
        raise OipError(f"input '{name}': its data is not a tensor of {datatype} ({e})") from None
    return array.ravel()


def _output(entry: Any, binary_output: bool) -> Requested:
    entry = _object(entry, "each of 'outputs'")
    name = entry.get("name")
    if not isinstance(name, str):
        raise OipError("a requested output has no 'name'")
    parameters = _object(entry.get("parameters", {}), f"output '{name}': 'parameters'")
    binary = _flag(parameters.get("binary_data", binary_output), "binary_data")
    k = _count(parameters.get("classification", 0), f"output '{name}': 'classification'")
    return Requested(name, binary, k)


# --- the served classifiers -------------------------------------------------------------------------------------

#: Triton model configuration's names of the data types.
_CONFIG_TYPES = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a model as its metadata shows it: shape with the batch dimension, -1 where any size
    goes; ``format``, the layout as Triton's model configuration says it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    format: str = "FORMAT_NONE"

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def config(self, **extra: Any) -> dict[str, Any]:
        """The entry of Triton's model configuration: dimensions without the batch one."""
        return {"name": self.name, "data_type": _CONFIG_TYPES.get(self.datatype, f"TYPE_{self.datatype}"),
                "format": self.format, "dims": list(self.shape[1:]), **extra}


@dataclass(frozen=True)
class ModelSpec:
    """What the protocol shows of one served classifier, and the check of a request against it.

    ``input_size`` is the side of the square network input (the weights' crop), None where the network takes
    any size; ``labels`` the class names, in output order.
    """

    name: str
    labels: tuple[str, ...]
    feature_dim: int
    max_batch: int
    platform: str
    input_size: int | None = None
    version: str = "1"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        side = self.input_size or -1
        return (TensorSpec(IMAGE, "BYTES", (-1, 1)), TensorSpec(PIXELS, "UINT8", (-1, -1, -1, 3), "FORMAT_NHWC"),
                TensorSpec(INPUT, "FP32", (-1, 3, side, side), "FORMAT_NCHW"))

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec(PROBABILITIES, "FP32", (-1, len(self.labels))),
                TensorSpec(FEATURES, "FP32", (-1, self.feature_dim)))

    def metadata(self) -> dict[str, Any]:
        """The model metadata response (``GET /v2/models/{name}``)."""
        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": [t.metadata() for t in self.inputs], "outputs": [t.metadata() for t in self.outputs]}

    def config(self, max_queue_delay_us: int = 0) -> dict[str, Any]:
        """Triton's model configuration (``GET /v2/models/{name}/config``): each input optional (give one of
        them), its layout in ``format``; dynamic batching up to ``max_batch``."""
        return {"name": self.name, "platform": self.platform, "max_batch_size": self.max_batch,
                "input": [t.config(optional=True) for t in self.inputs],
                "output": [t.config() for t in self.outputs],
                "dynamic_batching": {"max_queue_delay_microseconds": max_queue_delay_us},
                "version_policy": {"specific": {"versions": [int(self.version)]}}}

    def check_version(self, version: str | None) -> None:
        """404 unless ``version`` (from the URL; None: not given) is this model's."""
        if version is not None and version != self.version:
            raise OipError(f"request for unknown model: '{self.name}' version {version} is not found "
                           f"(versions: {self.version})", 404)

    def check(self, request: InferRequest) -> tuple[Tensor, list[Requested]]:
        """The request's one input, checked against this model (a ``BYTES`` one shaped ``[batch]``), and the
        outputs to answer (``probabilities`` where it names none)."""
        if len(request.inputs) != 1:
            raise OipError(f"model '{self.name}' takes 1 input, one of {', '.join(t.name for t in self.inputs)}; "
                           f"got {len(request.inputs)}")
        tensor = request.inputs[0]
        spec = next((t for t in self.inputs if t.name == tensor.name), None)
        if spec is None:
            raise OipError(f"unexpected inference input '{tensor.name}' for model '{self.name}' (one of "
                           f"{', '.join(t.name for t in self.inputs)})")
        if tensor.datatype != spec.datatype:
            raise OipError(f"unexpected datatype {tensor.datatype} for inference input '{tensor.name}', "
                           f"expecting {spec.datatype}")
        shape = tensor.shape
        if spec.datatype == "BYTES" and len(shape) == 1:
            shape = (*shape, 1)  # [batch] as KServe's and OpenVINO's clients send images, [batch, 1] as Triton's
        if len(shape) != len(spec.shape) or any(s not in (-1, d) for s, d in zip(spec.shape[1:], shape[1:])):
            raise OipError(f"unexpected shape for input '{tensor.name}' for model '{self.name}'. Expected "
                           f"{list(spec.shape)}, got {list(tensor.shape)}")
        if 0 in shape[1:]:
            raise OipError(f"input '{tensor.name}' has an empty dimension: {list(tensor.shape)}")
        if not 1 <= shape[0] <= self.max_batch:
            raise OipError(f"inference request batch-size must be in 1..{self.max_batch} for '{self.name}', "
                           f"got {shape[0]}")
        if spec.datatype == "BYTES":
            tensor = Tensor(tensor.name, tensor.datatype, tensor.data.reshape(shape[0]), tensor.parameters)
        outputs = request.outputs or [Requested(PROBABILITIES, request.binary_output)]
        names = [o.name for o in outputs]
        for name in names:
            if name not in (t.name for t in self.outputs):
                raise OipError(f"unexpected inference output '{name}' for model '{self.name}' (one of "
                               f"{', '.join(t.name for t in self.outputs)})")
        if len(set(names)) != len(names):
            raise OipError(f"an output is requested twice: {', '.join(names)}")
        return tensor, outputs

    def answer(self, requested: Requested, values: np.ndarray) -> Tensor:
        """The output ``requested`` from the model's ``values`` ([batch, n] float32): the tensor itself, or with
        ``classification`` its top classes as ``"score:index:label"`` (labels for the probabilities)."""
        if not requested.classification:
            return Tensor(requested.name, "FP32", np.ascontiguousarray(values, dtype="<f4"))
        labels = self.labels if requested.name == PROBABILITIES else None
        return Tensor(requested.name, "BYTES", top_classes(values, requested.classification, labels))


def top_classes(values: np.ndarray, k: int, labels: Sequence[str] | None = None) -> np.ndarray:
    """The ``k`` largest values of each row of ``values`` as Triton's classification extension writes them:
    ``"value:index"`` or ``"value:index:label"``, the value as C's ``%f`` (``std::to_string``), best first (ties
    by index)."""
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    out = np.empty(order.shape, dtype=object)
    for row, indices in enumerate(order):
        for col, i in enumerate(indices):
            text = f"{float(values[row, i]):f}:{i}" + (f":{labels[i]}" if labels is not None else "")
            out[row, col] = text.encode()
    return out


# --- responses ---------------------------------------------------------------------------------------------------

def infer_response(model: str, version: str, request_id: str | None,
                   outputs: Sequence[tuple[Tensor, bool]]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an inference response: each ``(tensor, binary)`` output in JSON, or after the JSON
    as binary data (with ``binary_data_size``, and ``Inference-Header-Content-Length`` saying where the JSON
    ends)."""
    entries, blobs = [], []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary:
            blob = _binary(tensor)
            entry["parameters"] = {**tensor.parameters, "binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if tensor.parameters:
                entry["parameters"] = tensor.parameters
            flat = tensor.data.ravel()
            entry["data"] = [b.decode() for b in flat] if tensor.datatype == "BYTES" else flat.tolist()
        entries.append(entry)
    answer: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        answer["id"] = request_id
    header = json.dumps({**answer, "outputs": entries}, separators=(",", ":")).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def _binary(tensor: Tensor) -> bytes:
    """A tensor's binary data: little-endian, row-major; ``BYTES`` elements each after its 4-byte length."""
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in tensor.data.ravel())
    return np.ascontiguousarray(tensor.data, dtype=np.dtype(DATATYPES[tensor.datatype])).tobytes()


def server_metadata(version: str) -> dict[str, Any]:
    """The server metadata response (``GET /v2``)."""
    return {"name": "resnets", "version": version, "extensions": list(EXTENSIONS)}
