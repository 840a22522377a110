"""``resnets serve`` speaks the Open Inference Protocol: the real ``tritonclient.http`` client against a real server
on 127.0.0.1, serving two models (the CIFAR-10 ResNet-20 with its recipe, and the same network taking images at
their own size). References are computed apart from the service: the weights' recipe on ``load_img`` and the
eager network (what ``resnets predict`` does), and ``resnets predict``'s own top classes."""

from __future__ import annotations

import base64
import gzip
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
triton = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from serve_server import request, serving  # noqa: E402

from resnets.data.images import load_img  # noqa: E402
from resnets.pipeline import Inference, StageFeatures, load_inference  # noqa: E402
from resnets.predict import predict_files  # noqa: E402
from resnets.preprocess import Preprocessing  # noqa: E402
from resnets.serve import ServeConfig  # noqa: E402

pytestmark = pytest.mark.slow  # real servers
ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "examples" / "images").glob("*.jpg"))
CAT = ROOT / "examples" / "images" / "cifar10_cat.jpg"
KEY = "oip-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}  # pass copies: tritonclient adds its own headers to the dict it gets
CIFAR, ANY_SIZE = "resnet20.cifar10", "any-size"


class Recording(nn.Module):
    """The model, ``seconds`` slower per call, recording the batch sizes it was called with."""

    def __init__(self, model: nn.Module, seconds: float = 0.0) -> None:
        super().__init__()
        self.model, self.seconds, self.batches = model, seconds, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(tuple(x.shape))
        time.sleep(self.seconds)
        return self.model(x)


@pytest.fixture(scope="module")
def inf() -> Inference:
    return load_inference("resnet20", CIFAR, device="cpu")


@pytest.fixture(scope="module")
def any_size(inf: Inference) -> Inference:
    """The same network without resize or crop: each image at its own size, so sizes never share a batch."""
    recipe = Preprocessing(inf.preprocessing.mean, inf.preprocessing.std)
    return Inference(inf.model, recipe, inf.classes, inf.name, inf.weights)


@pytest.fixture(scope="module")
def reference(inf: Inference) -> dict[str, np.ndarray]:
    """Each example image's probabilities, as ``resnets predict`` computes them (the recipe on load_img, the eager
    network)."""
    x = torch.stack([inf.preprocessing(load_img(p)) for p in IMAGES])
    with torch.inference_mode():
        return dict(zip([p.name for p in IMAGES], inf.probabilities(inf.model(x)).numpy()))


@pytest.fixture(scope="module")
def port(inf: Inference, any_size: Inference):
    config = ServeConfig(max_batch=8, max_delay_ms=100, api_key=KEY)
    with serving({CIFAR: inf, ANY_SIZE: any_size}, config) as port:
        yield port


@pytest.fixture()
def client(port: int):
    with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
        yield client


def image_input(paths: list[Path], binary: bool = True) -> triton.InferInput:
    given = triton.InferInput("image", [len(paths)], "BYTES")
    given.set_data_from_numpy(np.array([p.read_bytes() for p in paths], dtype=object), binary_data=binary)
    return given


def tensor_input(name: str, array: np.ndarray, binary: bool = True) -> triton.InferInput:
    given = triton.InferInput(name, list(array.shape), {np.float32: "FP32", np.uint8: "UINT8"}[array.dtype.type])
    given.set_data_from_numpy(array, binary_data=binary)
    return given


def refused(call, *args, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        call(*args, **kwargs)
    return e.value


# --- health and metadata ---------------------------------------------------------------------------------------

def test_health_metadata_and_configuration(client, port: int) -> None:
    assert client.is_server_live() and client.is_server_ready()  # open, as Kubernetes probes need
    assert client.is_model_ready(CIFAR) and client.is_model_ready(ANY_SIZE, "1")
    assert not client.is_model_ready("no-such-model") and not client.is_model_ready(CIFAR, "2")
    server = client.get_server_metadata(headers=dict(AUTH))
    assert server["name"] == "resnets" and {"binary_tensor_data", "classification"} <= set(server["extensions"])
    meta = client.get_model_metadata(CIFAR, headers=dict(AUTH))
    assert meta["name"] == CIFAR and meta["versions"] == ["1"]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]} == {
        "image": ("BYTES", [-1, 1]), "pixels": ("UINT8", [-1, -1, -1, 3]), "input": ("FP32", [-1, 3, 32, 32])}
    assert {t["name"]: t["shape"] for t in meta["outputs"]} == {"probabilities": [-1, 10], "features": [-1, 64]}
    assert client.get_model_metadata(ANY_SIZE, "1", headers=dict(AUTH))["inputs"][2]["shape"] == [-1, 3, -1, -1]
    config = client.get_model_config(CIFAR, headers=dict(AUTH))
    assert config["max_batch_size"] == 8
    assert {t["name"]: t["format"] for t in config["input"]} == {
        "image": "FORMAT_NONE", "pixels": "FORMAT_NHWC", "input": "FORMAT_NCHW"}
    missing = refused(client.get_model_metadata, "no-such-model", headers=dict(AUTH))
    assert missing.status() == "404" and "no-such-model" in missing.message()
    assert refused(client.get_model_metadata, CIFAR, "2", headers=dict(AUTH)).status() == "404"
    index = client.get_model_repository_index(headers=dict(AUTH))
    assert [(m["name"], m["state"]) for m in index] == [(CIFAR, "READY"), (ANY_SIZE, "READY")]
    assert request(port, "GET", "/v2/models", headers=dict(AUTH)).json == {"models": [CIFAR, ANY_SIZE]}


# --- inference -------------------------------------------------------------------------------------------------

def test_jpeg_bytes_in_a_batch_match_predict(client, inf: Inference, reference: dict) -> None:
    """The six example photos as one BYTES batch: the probabilities are those of the recipe on load_img, and the
    classification strings name resnets predict's top 3 (Triton's "score:index:label")."""
    top = {p.path.name: p.top for p in predict_files(inf, IMAGES, top=3, workers=0)}
    result = client.infer(CIFAR, [image_input(IMAGES)], headers=dict(AUTH),
                          outputs=[triton.InferRequestedOutput("probabilities")])
    np.testing.assert_allclose(result.as_numpy("probabilities"), [reference[p.name] for p in IMAGES], atol=1e-5)
    assert result.get_response()["model_name"] == CIFAR
    classes = client.infer(CIFAR, [image_input(IMAGES)], headers=dict(AUTH),
                           outputs=[triton.InferRequestedOutput("probabilities", class_count=3)],
                           request_compression_algorithm="gzip")  # a gzip body, as the client compresses it
    for path, row in zip(IMAGES, classes.as_numpy("probabilities")):
        parsed = [entry.decode().split(":", 2) for entry in row]
        assert [(int(i), name) for _, i, name in parsed] == [(int(cid), name) for cid, name, _ in top[path.name]]
        np.testing.assert_allclose([float(p) for p, _, _ in parsed], [p for *_, p in top[path.name]], atol=2e-6)


@pytest.mark.parametrize("binary_in, binary_out", [(True, False), (False, True)])
def test_a_float_tensor_with_binary_data_both_ways(client, inf: Inference, reference: dict, binary_in: bool,
                                                   binary_out: bool) -> None:
    x = torch.stack([inf.preprocessing(load_img(p)) for p in IMAGES[:3]]).numpy()  # NCHW, preprocessed
    result = client.infer(CIFAR, [tensor_input("input", x, binary_in)], headers=dict(AUTH), request_id="float-1",
                          outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary_out)])
    np.testing.assert_allclose(result.as_numpy("probabilities"), [reference[p.name] for p in IMAGES[:3]],
                               atol=1e-5)
    output = result.get_output("probabilities")
    assert ("binary_data_size" in output.get("parameters", {})) == binary_out
    assert result.get_response()["id"] == "float-1"


def test_uint8_pixels_are_the_photo(client, inf: Inference, reference: dict) -> None:
    """RGB pixels (NHWC) get the same answer as the JPEG they were decoded from: the recipe runs on them."""
    pixels = np.asarray(load_img(CAT))[None]
    result = client.infer(CIFAR, [tensor_input("pixels", pixels)], headers=dict(AUTH))
    np.testing.assert_allclose(result.as_numpy("probabilities")[0], reference[CAT.name], atol=1e-6)


def test_pooled_features_on_request(client, inf: Inference) -> None:
    x = inf.preprocessing(load_img(CAT))[None]
    with torch.inference_mode():
        expected = StageFeatures(inf.model, None, "avg").eval()(x).numpy()
    result = client.infer(CIFAR, [image_input([CAT])], headers=dict(AUTH),
                          outputs=[triton.InferRequestedOutput("features"),
                                   triton.InferRequestedOutput("probabilities", binary_data=False, class_count=1)])
    np.testing.assert_allclose(result.as_numpy("features"), expected, rtol=1e-5, atol=1e-6)
    assert result.as_numpy("probabilities")[0][0].endswith(":3:cat")  # JSON: str


def test_raw_binary_request_and_an_unversioned_url(port: int, reference: dict) -> None:
    """A raw binary request (Inference-Header-Content-Length 0): the body one image, the outputs binary."""
    answer = request(port, "POST", f"/v2/models/{CIFAR}/versions/1/infer", CAT.read_bytes(),
                     {**AUTH, "Inference-Header-Content-Length": "0"})
    assert answer.status == 200 and answer.headers["content-type"] == "application/octet-stream"
    result = triton.InferenceServerClient.parse_response_body(
        answer.body, header_length=int(answer.headers["inference-header-content-length"]))
    np.testing.assert_allclose(result.as_numpy("probabilities")[0], reference[CAT.name], atol=1e-5)


def test_bad_requests_are_the_protocols_errors(client, port: int) -> None:
    wrong = refused(client.infer, CIFAR, [tensor_input("input", np.zeros((1, 3, 64, 64), np.float32))],
                    headers=dict(AUTH))
    assert wrong.status() == "400" and "unexpected shape for input 'input'" in wrong.message()
    too_many = refused(client.infer, CIFAR, [image_input([CAT] * 9)], headers=dict(AUTH))
    assert too_many.status() == "400" and "batch-size" in too_many.message()
    text = triton.InferInput("image", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"not an image"], dtype=object))
    not_image = refused(client.infer, CIFAR, [text], headers=dict(AUTH))
    assert not_image.status() == "415" and "image" in not_image.message()
    unknown = refused(client.infer, CIFAR, [image_input([CAT])], headers=dict(AUTH),
                      outputs=[triton.InferRequestedOutput("logits")])
    assert unknown.status() == "400" and "unexpected inference output 'logits'" in unknown.message()
    assert refused(client.infer, "no-such-model", [image_input([CAT])], headers=dict(AUTH)).status() == "404"
    for body, words in ((b"{not json", "failed to parse"), (b'{"inputs": []}', "no 'inputs'")):
        answer = request(port, "POST", f"/v2/models/{CIFAR}/infer", body, AUTH)
        assert answer.status == 400 and set(answer.json) == {"error"} and words in answer.json["error"]
    assert request(port, "GET", "/v2/nothing-here", headers=dict(AUTH)).json == {"error": "Not Found"}


def test_api_key_and_loading_models_at_run_time(client, port: int, reference: dict) -> None:
    assert refused(client.infer, CIFAR, [image_input([CAT])]).status() == "401"
    assert refused(client.get_model_metadata, CIFAR).status() == "401"
    assert refused(client.unload_model, ANY_SIZE).status() == "401"
    client.unload_model(ANY_SIZE, headers=dict(AUTH))
    client.unload_model(ANY_SIZE, headers=dict(AUTH))  # unloaded already: nothing to do, as Triton
    assert not client.is_model_ready(ANY_SIZE) and client.is_server_ready()
    gone = refused(client.infer, ANY_SIZE, [image_input([CAT])], headers=dict(AUTH))
    assert gone.status() == "503" and "not loaded" in gone.message()
    assert [m["state"] for m in client.get_model_repository_index(headers=dict(AUTH))] == ["READY", "UNAVAILABLE"]
    assert request(port, "POST", "/v2/repository/index", b'{"ready": true}', AUTH).json[0]["name"] == CIFAR
    assert refused(client.load_model, ANY_SIZE, headers=dict(AUTH), config='{"backend": "python"}').status() == "400"
    client.load_model(ANY_SIZE, headers=dict(AUTH))
    assert client.is_model_ready(ANY_SIZE)
    result = client.infer(ANY_SIZE, [image_input([CAT])], headers=dict(AUTH))
    assert result.as_numpy("probabilities").shape == (1, 10)
    client.load_model(CIFAR, headers=dict(AUTH))  # a reload: the old copy serves until the new one is ready
    again = client.infer(CIFAR, [image_input([CAT])], headers=dict(AUTH))
    np.testing.assert_allclose(again.as_numpy("probabilities")[0], reference[CAT.name], atol=1e-5)
    assert refused(client.load_model, "no-such-model", headers=dict(AUTH)).status() == "404"


def test_loading_needs_a_server_with_a_key_and_json_counts_against_the_decoding_budget(inf: Inference) -> None:
    with serving(inf, ServeConfig(decode_memory_mb=1)) as port, \
            triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
        assert client.get_model_metadata(CIFAR)["name"] == CIFAR  # no key set: the API is open
        forbidden = refused(client.unload_model, CIFAR)
        assert forbidden.status() == "403" and "API key" in forbidden.message()
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        as_json = refused(client.infer, CIFAR, [tensor_input("input", x, binary=False)])  # ~60 KB of JSON
        assert as_json.status() == "413" and "binary data" in as_json.message()
        assert client.infer(CIFAR, [tensor_input("input", x)]).as_numpy("probabilities").shape == (1, 10)


# --- many models, many sizes -----------------------------------------------------------------------------------

def photos() -> list[bytes]:
    """The cat at five sizes and aspect ratios (JPEG)."""
    cat = load_img(CAT)
    out = []
    for size in ((32, 32), (40, 30), (64, 48), (100, 20), (57, 91)):
        buffer = io.BytesIO()
        cat.resize(size).save(buffer, format="JPEG", quality=95)
        out.append(buffer.getvalue())
    return out


def test_images_of_different_sizes_share_batches_and_get_their_own_answers(inf: Inference) -> None:
    """LitServe #607: photos of five sizes sent at once (each its own request, half through /v1, half /v2) get the
    answers they get one at a time; with a recipe that resizes they share model calls, without one each size
    runs in its own."""
    model = Recording(inf.model, seconds=0.3)
    cifar = Inference(model, inf.preprocessing, inf.classes, inf.name, inf.weights, network=inf.model)
    sizes = Inference(model, Preprocessing(inf.preprocessing.mean, inf.preprocessing.std), inf.classes, inf.name,
                      inf.weights, network=inf.model)
    data = photos()
    with serving({"cifar": cifar, "sizes": sizes}, ServeConfig(max_batch=8, max_delay_ms=200)) as port:
        def ask(name: str, i: int) -> np.ndarray:
            if i % 2:
                answer = request(port, "POST", f"/v1/predict?top=10&model={name}", data[i])
                assert answer.status == 200 and answer.json["model"] == "resnet20", answer.body
                found = {p["index"]: p["probability"] for p in answer.json["predictions"]}
                return np.array([found[k] for k in range(10)])
            given = triton.InferInput("image", [1], "BYTES")
            given.set_data_from_numpy(np.array([data[i]], dtype=object))
            with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:  # one per thread (gevent inside)
                return client.infer(name, [given]).as_numpy("probabilities")[0]

        for name in ("cifar", "sizes"):
            alone = [ask(name, i) for i in range(len(data))]
            model.batches.clear()
            with ThreadPoolExecutor(len(data)) as pool:
                together = list(pool.map(lambda i: ask(name, i), range(len(data))))
            np.testing.assert_allclose(together, alone, atol=1e-5)
            if name == "cifar":
                assert max(len(b) for b in model.batches) > 1, model.batches
            else:  # one shape per call, never mixed
                assert len({b[2:] for b in model.batches}) == len(data) and sum(b[0] for b in model.batches) == 5


def test_v1_takes_the_model_by_name_and_readyz_lists_them(port: int) -> None:
    wide = photos()[3]
    first = request(port, "POST", "/v1/predict", wide, AUTH)
    other = request(port, "POST", f"/v1/predict?model={ANY_SIZE}", wide, AUTH)
    assert first.status == other.status == 200
    assert first.json["predictions"] != other.json["predictions"]  # 32x32 vs the photo at its own size, 100x20
    missing = request(port, "POST", "/v1/features?model=nope", CAT.read_bytes(), AUTH)
    assert missing.status == 404 and missing.json["error"] == "unknown_model"
    ready = request(port, "GET", "/readyz").json
    assert list(ready["models"]) == [CIFAR, ANY_SIZE] and ready["model"] == "resnet20"
    metrics = request(port, "GET", "/metrics", headers=dict(AUTH)).body.decode()
    assert 'endpoint="/v2/models/{name}/infer",status="200"' in metrics
    assert f"/v2/models/{CIFAR}" not in metrics  # one series per endpoint, not per model


def test_serve_command_line_names_each_model() -> None:
    from resnets.cli import build_parser
    from resnets.cli.common import UsageError
    from resnets.cli.serve import model_options, replicas

    def parse(*argv: str):
        return [(name, one.weights, one.model, one.precision)
                for name, one in model_options(build_parser().parse_args(["serve", *argv]))]

    assert parse("--weights", CIFAR, "--weights", "tiny=none", "--model", "resnet20", "--precision", "fp32") == [
        (CIFAR, CIFAR, "resnet20", "fp32"), ("tiny", "none", "resnet20", "fp32")]
    assert parse("--weights", "hf-hub:timm/resnet50.a1_in1k@main", "--weights", "runs/a/best.safetensors",
                 "--precision", "int8", "--precision", "fp32") == [
        ("resnet50.a1_in1k", "hf-hub:timm/resnet50.a1_in1k@main", None, "int8"),
        ("best", "runs/a/best.safetensors", None, "fp32")]
    assert parse()[0][0] == "resnet50"  # imagenet: the network's name
    for argv, words in ((["--weights", CIFAR, "--weights", CIFAR], "two models named"),
                        (["--weights", "a", "--weights", "b", "--backend", "torch", "--backend", "torch",
                          "--backend", "torch"], "once per --weights")):
        with pytest.raises(UsageError, match=words):
            parse(*argv)
    assert replicas(build_parser().parse_args(["serve", "--engine", "ray", "--replicas", "auto"])) == "auto"
    for argv, words in ((["--replicas", "2"], "need --engine ray"), (["--address", "auto"], "need --engine ray"),
                        (["--engine", "ray", "--replicas", "0"], "count >= 1 or auto")):
        with pytest.raises(UsageError, match=words):
            replicas(build_parser().parse_args(["serve", *argv]))


def test_models_built_by_a_function_are_built_again_on_reload(inf: Inference) -> None:
    built = []

    def build() -> Inference:
        built.append(1)
        return inf

    key = ServeConfig(api_key=KEY)
    with serving({"built": build}, key) as port, triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
        assert len(built) == 1
        client.unload_model("built", headers=dict(AUTH))
        client.load_model("built", headers=dict(AUTH))
        assert len(built) == 2 and client.is_model_ready("built")
        body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"content_type": "base64"},
                                       "data": [base64.b64encode(CAT.read_bytes()).decode()]}]})
        answer = request(port, "POST", "/v2/models/built/infer", gzip.compress(body.encode()),
                         {**AUTH, "Content-Encoding": "gzip"})
        assert answer.status == 200 and len(answer.json["outputs"][0]["data"]) == 10
