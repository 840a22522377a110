"""The Open Inference Protocol codec (resnets.serve.oip) against the real client: request bodies built by
``tritonclient.http`` (its own ``generate_request_body``), responses read back by its ``InferResult``
(``parse_response_body``), classification strings as Triton's C++ server writes them."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tritonclient.http")
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput  # noqa: E402

from resnets.classes import decode_predictions  # noqa: E402
from resnets.serve import oip  # noqa: E402
from resnets.serve.oip import ModelSpec, OipError, Requested  # noqa: E402

LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MODEL = ModelSpec("resnet20", LABELS, feature_dim=64, max_batch=4, platform="resnets_eager", input_size=32)


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def client_body(inputs: list, outputs: list | None = None, **kwargs) -> tuple[bytes, str | None]:
    """The body and Inference-Header-Content-Length tritonclient sends for these inputs and outputs."""
    body, json_size = InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kwargs)
    return body, None if json_size is None else str(json_size)


def tensor_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> InferInput:
    given = InferInput(name, list(array.shape), datatype)
    given.set_data_from_numpy(array, binary_data=binary)
    return given


@pytest.mark.parametrize("binary", [False, True])
def test_float_tensor_request_as_the_client_sends_it(binary):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    body, length = client_body([tensor_input("input", x, "FP32", binary)],
                               [InferRequestedOutput("probabilities", binary_data=not binary, class_count=3),
                                InferRequestedOutput("features", binary_data=binary)], request_id="req-7")
    request = oip.parse_infer_request(body, length)
    tensor, outputs = MODEL.check(request)
    assert (tensor.name, tensor.datatype) == ("input", "FP32")
    np.testing.assert_array_equal(tensor.data, x)
    assert outputs == [Requested("probabilities", not binary, 3), Requested("features", binary, 0)]
    assert request.id == "req-7"


@pytest.mark.parametrize("shape", [(3,), (3, 1)])
def test_encoded_images_as_bytes_in_binary(shape):
    images = [jpeg((200, 30, 30)), jpeg((30, 200, 30), (64, 48)), jpeg((30, 30, 200))]
    array = np.array(images, dtype=object).reshape(shape)
    body, length = client_body([tensor_input("image", array, "BYTES", True)])
    request = oip.parse_infer_request(body, length)
    tensor, outputs = MODEL.check(request)
    assert tensor.shape == (3,) and list(tensor.data) == images
    # No outputs named: tritonclient asks for every output in binary; the model's default is the probabilities.
    assert request.binary_output and outputs == [Requested("probabilities", True, 0)]


def test_uint8_pixels_in_json():
    pixels = np.random.default_rng(1).integers(0, 256, (1, 30, 40, 3), dtype=np.uint8)
    body, length = client_body([tensor_input("pixels", pixels, "UINT8", False)],
                               [InferRequestedOutput("probabilities", binary_data=False)])
    assert length is None  # all JSON
    tensor, _ = MODEL.check(oip.parse_infer_request(body, length))
    np.testing.assert_array_equal(tensor.data, pixels)


def test_bytes_in_json_as_base64():
    image = jpeg((10, 20, 30))
    body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"content_type": "base64"},
                                   "data": [base64.b64encode(image).decode()]}]}).encode()
    tensor, _ = MODEL.check(oip.parse_infer_request(body))
    assert list(tensor.data) == [image]


def test_raw_binary_request_is_one_image():
    image = jpeg((1, 2, 3))
    request = oip.parse_infer_request(image, "0")
    tensor, outputs = MODEL.check(request)
    assert list(tensor.data) == [image] and outputs == [Requested("probabilities", True, 0)]


@pytest.mark.parametrize("compress, encoding", [(gzip.compress, "gzip"), (zlib.compress, "deflate")])
def test_compressed_requests_as_the_client_compresses_them(compress, encoding):
    body = json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [0.0] * 5000}]})
    assert oip.decompress(compress(body.encode()), encoding, limit=len(body)) == body.encode()
    with pytest.raises(OipError) as e:
        oip.decompress(compress(body.encode()), encoding, limit=len(body) - 1)
    assert e.value.status == 413
    with pytest.raises(OipError, match="truncated"):
        oip.decompress(compress(body.encode())[:40], encoding, limit=len(body))
    with pytest.raises(OipError) as e:
        oip.decompress(b"x", "br", limit=10)
    assert e.value.status == 415


@pytest.mark.parametrize("binary", [False, True])
def test_responses_read_by_the_clients_infer_result(binary):
    rng = np.random.default_rng(2)
    probabilities = rng.dirichlet(np.ones(10), size=2).astype(np.float32)
    features = rng.standard_normal((2, 64)).astype(np.float32)
    top = MODEL.answer(Requested("probabilities", binary, 3), probabilities)
    body, headers = oip.infer_response("resnet20", "1", "req-1", [
        (top, binary), (MODEL.answer(Requested("features", binary), features), binary)])
    length = headers.get(oip.HEADER_LENGTH)
    assert (length is not None) is binary
    assert headers["Content-Type"] == ("application/octet-stream" if binary else "application/json")
    result = InferenceServerClient.parse_response_body(body, header_length=None if length is None else int(length))
    np.testing.assert_array_equal(result.as_numpy("features"), features)
    classes = result.as_numpy("probabilities")
    assert classes.shape == (2, 3)
    classes = [[c.decode() if isinstance(c, bytes) else c for c in row] for row in classes]  # JSON gives str
    response = result.get_response()
    assert response["model_name"] == "resnet20" and response["id"] == "req-1"
    for row, probs in zip(classes, probabilities):
        expected = decode_predictions(probs[None], 3, "cifar10")[0]  # the package's own top classes
        assert [c.split(":", 2)[2] for c in row] == [name for _, name, _ in expected]
        # Triton's classification.cc: std::to_string(value) + ":" + std::to_string(index) + ":" + label
        assert row == ["%f:%d:%s" % (probs[i], i, LABELS[i])
                                             for i in np.argsort(-probs)[:3]]


def test_json_response_read_by_the_client():
    probabilities = np.random.default_rng(3).dirichlet(np.ones(10), size=1).astype(np.float32)
    body, headers = oip.infer_response("m", "1", None, [(MODEL.answer(Requested("probabilities"), probabilities),
                                                         False)])
    assert headers == {"Content-Type": "application/json"}
    result = InferenceServerClient.parse_response_body(body)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    assert "id" not in result.get_response()


def test_classification_of_features_has_no_labels():
    values = np.array([[1.1, 3.3, 0.5, 2.4]], dtype=np.float32)
    # The classification extension's own example: [1.1, 3.3, 0.5, 2.4], top 2 -> "3.3:1", "2.4:3" (as %f).
    assert list(oip.top_classes(values, 2)[0]) == [b"3.300000:1", b"2.400000:3"]
    assert MODEL.answer(Requested("features", classification=2), values).shape == (1, 2)


def test_metadata_and_config():
    meta = MODEL.metadata()
    assert meta["name"] == "resnet20" and meta["versions"] == ["1"]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]} == {
        "image": ("BYTES", [-1, 1]), "pixels": ("UINT8", [-1, -1, -1, 3]), "input": ("FP32", [-1, 3, 32, 32])}
    assert {t["name"]: t["shape"] for t in meta["outputs"]} == {"probabilities": [-1, 10], "features": [-1, 64]}
    config = MODEL.config(5000)
    assert config["max_batch_size"] == 4
    assert {t["name"]: (t["format"], t["dims"], t["optional"]) for t in config["input"]} == {
        "image": ("FORMAT_NONE", [1], True), "pixels": ("FORMAT_NHWC", [-1, -1, 3], True),
        "input": ("FORMAT_NCHW", [3, 32, 32], True)}
    assert config["input"][0]["data_type"] == "TYPE_STRING"
    assert set(oip.server_metadata("0.1.0")["extensions"]) >= {"binary_tensor_data", "classification"}
    MODEL.check_version("1")
    MODEL.check_version(None)
    with pytest.raises(OipError) as e:
        MODEL.check_version("2")
    assert e.value.status == 404


def _bad(inputs: list, outputs: list | None = None) -> str:
    body, length = client_body(inputs, outputs)
    with pytest.raises(OipError) as e:
        MODEL.check(oip.parse_infer_request(body, length))
    assert e.value.status == 400 and e.value.body() == {"error": e.value.message}
    return e.value.message


def test_requests_the_model_refuses():
    x = np.zeros((1, 3, 32, 32), np.float32)
    assert "unexpected shape for input 'input'" in _bad([tensor_input("input", np.zeros((1, 3, 64, 64),
                                                                                         np.float32), "FP32", True)])
    assert "batch-size must be in 1..4" in _bad([tensor_input("input", np.zeros((5, 3, 32, 32), np.float32),
                                                              "FP32", True)])
    assert "unexpected datatype FP64" in _bad([tensor_input("input", x.astype(np.float64), "FP64", True)])
    assert "unexpected inference input 'INPUT__0'" in _bad([tensor_input("INPUT__0", x, "FP32", True)])
    assert "takes 1 input" in _bad([tensor_input("input", x, "FP32", True),
                                    tensor_input("pixels", np.zeros((1, 2, 2, 3), np.uint8), "UINT8", True)])
    assert "unexpected inference output 'logits'" in _bad([tensor_input("input", x, "FP32", True)],
                                                          [InferRequestedOutput("logits")])
    assert "empty dimension" in _bad([tensor_input("pixels", np.zeros((1, 0, 2, 3), np.uint8), "UINT8", True)])


@pytest.mark.parametrize("body, length, message", [  # length: the header, or the binary data after the JSON
    (b"{not json", None, "failed to parse the request JSON"),
    (b"[]", None, "must be an object"),
    (b'{"inputs": []}', None, "no 'inputs'"),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1.0]}]}', None,
     "1 elements for shape [2]"),
    (b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', None,
     "not a tensor of FP32"),
    (b'{"inputs": [{"name": "pixels", "shape": [1], "datatype": "UINT8", "data": [300]}]}', None,
     "not a tensor of UINT8"),
    (b'{"inputs": [{"name": "input", "shape": [-1], "datatype": "FP32", "data": []}]}', None, "non-negative"),
    (b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP8", "data": [1]}]}', None, "unknown datatype"),
    (b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32"}]}', None, "neither 'data'"),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}',
     b"\0\0\0\0", "over the binary data left"),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}',
     b"\0\0\0\0", "4 bytes of binary data for shape [2] of FP32, expected 8"),
    (b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}',
     b"\0\0\0\0\0", "1 bytes of binary data beyond"),
    (b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}',
     b"\x09\0\0\0ab", "runs past its binary data"),
    (b"{}", "x", "unable to parse Inference-Header-Content-Length"),
    (b"{}", "3", "over the body's length"),
    (b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["a"]}], '
     b'"parameters": {"binary_data_output": "yes"}}', None, "binary_data_output"),
])
def test_malformed_requests(body, length, message):
    if isinstance(length, bytes):  # (JSON, binary data): the header length is the JSON's
        body, length = body + length, str(len(body))
    with pytest.raises(OipError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")) as e:
        oip.parse_infer_request(body, length)
    assert e.value.status == 400
