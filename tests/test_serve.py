"""``resnets serve``: real servers on 127.0.0.1 (uvicorn in a thread, or ``resnets serve`` in a subprocess).

References are computed independently of the service: ``predict_files`` (what ``resnets predict``
prints) for classes, and the eager network's stage output for features.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")

from serve_server import decompression_bomb, free_port, multipart, request, serving, wait_ready  # noqa: E402

from resnets.data.images import load_img  # noqa: E402
from resnets.pipeline import Inference, StageFeatures, load_inference  # noqa: E402
from resnets.predict import predict_files  # noqa: E402
from resnets.serve import Batcher, QueueFull, ServeConfig  # noqa: E402
from resnets.serve.app import batch_sizes  # noqa: E402
from resnets.serve.metrics import Metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "examples" / "images").glob("*.jpg"))
CAT = ROOT / "examples" / "images" / "cifar10_cat.jpg"
WEIGHTS = "resnet20.cifar10"


@pytest.fixture(scope="module")
def inf() -> Inference:
    return load_inference("resnet20", WEIGHTS, device="cpu")


@pytest.fixture(scope="module")
def reference(inf: Inference) -> dict[str, list[tuple[str, str, float]]]:
    """What ``resnets predict`` answers for each example image (top 5)."""
    return {p.path.name: p.top for p in predict_files(inf, IMAGES, top=5, batch_size=len(IMAGES), workers=0)}


@pytest.fixture(scope="module")
def port(inf: Inference):
    with serving(inf, ServeConfig(max_batch=8, max_delay_ms=150, max_upload_mb=0.25)) as port:
        yield port


class Slow(nn.Module):
    """The model, ``seconds`` slower per call, recording the batch sizes it was called with."""

    def __init__(self, model: nn.Module, seconds: float) -> None:
        super().__init__()
        self.model, self.seconds, self.batches = model, seconds, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        time.sleep(self.seconds)
        return self.model(x)


def slow(inf: Inference, seconds: float) -> Inference:
    return Inference(Slow(inf.model, seconds), inf.preprocessing, inf.classes, inf.name, inf.weights)


def predict(port: int, data: bytes, as_form: bool = False, query: str = "top=5", headers: dict | None = None):
    body, form_headers = multipart(data) if as_form else (data, {"Content-Type": "image/jpeg"})
    return request(port, "POST", f"/v1/predict?{query}", body, {**form_headers, **(headers or {})})


def assert_same_top(answer: dict, expected: list[tuple[str, str, float]]) -> None:
    got = [(p["id"], p["name"]) for p in answer["predictions"]]
    assert got == [(i, n) for i, n, _ in expected]
    np.testing.assert_allclose([p["probability"] for p in answer["predictions"]], [p for *_, p in expected],
                               rtol=0, atol=1e-5)
    assert [p["index"] for p in answer["predictions"]] == [int(i) for i, _, _ in expected]  # CIFAR ids are indices


def metric(port: int, name: str, headers: dict | None = None) -> float:
    text = request(port, "GET", "/metrics", headers=headers).body.decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


# --- answers ---------------------------------------------------------------------------------------------

def test_concurrent_requests_share_batches_and_match_the_cli(port: int, reference: dict) -> None:
    """Every photo, sent at once (half multipart, half raw), gets exactly the CLI's top 5, batched."""
    def send(i: int):
        return predict(port, IMAGES[i].read_bytes(), as_form=i % 2 == 0)

    with ThreadPoolExecutor(len(IMAGES)) as pool:
        answers = list(pool.map(send, range(len(IMAGES))))
    for path, answer in zip(IMAGES, answers):
        assert answer.status == 200, answer.body
        body = answer.json
        assert_same_top(body, reference[path.name])
        assert (body["model"], body["weights"]) == ("resnet20", WEIGHTS)
        assert set(body["timings_ms"]) == {"decode", "queue", "model", "total"}
        assert all(v >= 0 for v in body["timings_ms"].values())
    assert max(a.json["batch_size"] for a in answers) > 1, "concurrent requests should share a model call"
    assert metric(port, 'resnets_batch_size_count') < metric(port, 'resnets_batch_size_sum')


def test_top_parameter(port: int, reference: dict) -> None:
    answer = predict(port, CAT.read_bytes(), query="top=2")
    assert answer.status == 200
    assert_same_top(answer.json, reference[CAT.name][:2])
    assert predict(port, CAT.read_bytes(), query="top=50").json["predictions"].__len__() == 10  # all classes


@pytest.mark.parametrize("layer,pooling", [(None, "avg"), (2, "max")])
def test_features_match_the_eager_network(port: int, inf: Inference, layer: int | None, pooling: str) -> None:
    x = inf.preprocessing(load_img(CAT))[None]
    with torch.inference_mode():
        expected = StageFeatures(inf.model, layer, pooling).eval()(x)[0].numpy()
    query = f"pooling={pooling}" + (f"&layer={layer}" if layer else "")
    answer = request(port, "POST", f"/v1/features?{query}", CAT.read_bytes())
    assert answer.status == 200, answer.body
    body = answer.json
    assert body["dim"] == len(expected) and body["pooling"] == pooling and body["layer"] == (layer or 3)
    np.testing.assert_allclose(body["features"], expected, rtol=1e-5, atol=1e-6)
    raw = request(port, "POST", f"/v1/features?{query}", CAT.read_bytes(), {"Accept": "application/octet-stream"})
    assert raw.status == 200 and raw.headers["content-type"] == "application/octet-stream"
    assert int(raw.headers["x-feature-dim"]) == len(expected)
    np.testing.assert_allclose(np.frombuffer(raw.body, "<f4"), expected, rtol=1e-5, atol=1e-6)


def test_explain_draws_what_resnets_explain_draws(port: int, inf: Inference, reference: dict, tmp_path: Path) -> None:
    from PIL import Image

    from resnets.explain_images import CAPTION_HEIGHT, explain_files

    written = next(explain_files(inf, [CAT], tmp_path, workers=0)).output  # what `resnets explain` writes
    answer = request(port, "POST", "/v1/explain", CAT.read_bytes())
    assert answer.status == 200 and answer.headers["content-type"] == "image/png", answer.body[:300]
    top_id, top_name, top_p = reference[CAT.name][0]
    assert (answer.headers["x-class-index"], answer.headers["x-class-name"]) == (top_id, top_name)
    assert abs(float(answer.headers["x-probability"]) - top_p) < 1e-5
    served, expected = Image.open(io.BytesIO(answer.body)), Image.open(written)
    assert served.size == expected.size
    picture = (0, 0, served.width, served.height - CAPTION_HEIGHT)  # the captions name the file differently
    np.testing.assert_array_equal(np.asarray(served.crop(picture)), np.asarray(expected.crop(picture)))
    other = request(port, "POST", "/v1/explain?target=dog&method=gradcam%2B%2B&layer=2", CAT.read_bytes())
    assert other.status == 200 and other.headers["x-class-name"] == "dog"
    for query, words in (("target=unicorn", "unicorn"), ("method=lime", "method"), ("layer=7", "layer"),
                         ("method=cam&layer=2", "CAM")):
        bad = request(port, "POST", f"/v1/explain?{query}", CAT.read_bytes())
        assert bad.status == 422 and words in bad.json["detail"], (query, bad.body)


@pytest.fixture(scope="module")
def int8_inf() -> Inference:
    pytest.importorskip("onnxruntime")
    return load_inference("resnet20", WEIGHTS, "int8", backend="onnxruntime", calibration=IMAGES, device="cpu")


@pytest.mark.parametrize("eager_extras", [False, True])
def test_features_and_explain_run_the_way_the_model_runs(inf: Inference, int8_inf: Inference,
                                                         eager_extras: bool) -> None:
    """An int8 model's features and heat maps come from its int8 stages (close to eager, not equal), unless
    eager_extras asks for the eager fp32 network (equal to it)."""
    from resnets.explain import explain
    from resnets.pipeline import StageMap
    from resnets.serve.repository import Served

    served = int8_inf
    config = ServeConfig(max_batch=4, eager_extras=eager_extras)
    models = Served("resnet20", served, config, Metrics()).models
    assert isinstance(models.stage_map(3), StageMap) == eager_extras
    x = inf.preprocessing(load_img(CAT))[None]
    with torch.inference_mode():
        expected = StageFeatures(inf.model, None, "avg").eval()(x)[0].numpy()
        row = models((models.explainer("gradcam", None, None), tuple(x.shape)))(x)[0]
    eager = explain(inf.model, x, method="gradcam")
    assert int(row[0]) == int(eager.classes[0])
    heat, eager_heat = row[2:].numpy(), eager.maps[0].flatten().numpy()
    with serving(served, config) as port:
        features = np.asarray(request(port, "POST", "/v1/features", CAT.read_bytes()).json["features"])
        answer = request(port, "POST", "/v1/explain?method=gradcam", CAT.read_bytes())
    assert answer.status == 200 and answer.headers["x-class-name"] == "cat"
    difference = np.abs(features - expected).max() / np.abs(expected).max()
    if eager_extras:
        assert difference < 1e-5 and np.abs(heat - eager_heat).max() < 1e-5
    else:  # int8: near the eager network's features and map, yet not them
        assert 1e-4 < difference < 0.1, difference
        assert 0 < np.abs(heat - eager_heat).max() and np.corrcoef(heat, eager_heat)[0, 1] > 0.9


def test_health_readiness_metrics_and_page(port: int) -> None:
    assert request(port, "GET", "/healthz").json == {"status": "ok"}
    ready = request(port, "GET", "/readyz").json
    assert ready["status"] == "ready" and ready["model"] == "resnet20"
    predict(port, CAT.read_bytes())
    text = request(port, "GET", "/metrics").body.decode()
    for name in ("resnets_requests_total", "resnets_batch_size", "resnets_request_latency_seconds",
                 "resnets_queue_depth"):
        assert f"# TYPE {name} " in text
    assert re.search(r'^resnets_requests_total\{endpoint="/v1/predict",status="200"\} [1-9]', text, re.M)
    assert re.search(r'^resnets_batch_size_bucket\{le="\+Inf"\} [1-9]', text, re.M)
    for line in text.splitlines():  # the exposition format: comments or "name{labels} value"
        assert line.startswith("# ") or re.fullmatch(r'[a-z_]+(\{[^}]*\})? [-+0-9.eInf]+', line), line
    page = request(port, "GET", "/")
    assert page.status == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/", "/static/app.js", "/static/style.css"):  # nothing loaded from the internet
        text = request(port, "GET", asset).body.decode()
        assert not re.search(r"(src|href)=\"(https?:)?//|url\((https?:)?//|@import|https?://", text), asset
    assert request(port, "GET", "/openapi.json").json["paths"].keys() >= {"/v1/predict", "/v1/features", "/v1/explain"}


# --- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,body,status,words", [
    ("text", b"hello, this is not a picture", 415, "not an image"),
    ("url", b"https://example.com/cat.jpg", 415, "not an image"),  # never fetched: it is just bytes
    ("truncated", (ROOT / "examples/images/zebra.jpg").read_bytes()[:4000], 422, "truncated"),
    ("bomb", decompression_bomb(), 422, "decompression bomb"),
    ("empty", b"", 400, "no image"),
])
def test_bad_images_are_named(port: int, name: str, body: bytes, status: int, words: str) -> None:
    for as_form in (False, True):
        answer = predict(port, body, as_form=as_form)
        assert answer.status == status, (name, as_form, answer.body)
        assert words in answer.json["detail"], answer.json


def test_bad_requests(port: int) -> None:
    body, headers = multipart(CAT.read_bytes(), field="image")
    answer = request(port, "POST", "/v1/predict", body, headers)
    assert answer.status == 400 and "'file'" in answer.json["detail"]
    for query, words in (("top=0", "top"), ("top=abc", "top")):
        answer = predict(port, CAT.read_bytes(), query=query)
        assert answer.status == 422 and words in answer.json["detail"]
    answer = request(port, "POST", "/v1/features?layer=9", CAT.read_bytes())
    assert answer.status == 422 and "stage must lie in 1..3" in answer.json["detail"]
    answer = request(port, "POST", "/v1/features?pooling=median", CAT.read_bytes())
    assert answer.status == 422 and "pooling" in answer.json["detail"]
    assert request(port, "GET", "/v1/predict").status == 405
    assert request(port, "GET", "/nothing-here").json["error"] == "http_error"


def test_body_over_the_limit_is_413_with_or_without_content_length(port: int) -> None:
    big = os.urandom(300 * 1024)  # over --max-upload-mb 0.25
    answer = predict(port, big)
    assert answer.status == 413 and "max-upload-mb" in answer.json["detail"]
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # chunked: the size is only known by counting
    conn.request("POST", "/v1/predict", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                 headers={"Content-Type": "image/jpeg"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and "max-upload-mb" in json.loads(response.read())["detail"]
    conn.close()
    assert predict(port, CAT.read_bytes()).status == 200  # and the server goes on


# --- load and clients --------------------------------------------------------------------------------------

def test_full_server_answers_503_and_loses_no_accepted_request(inf: Inference, reference: dict) -> None:
    config = ServeConfig(max_batch=2, max_delay_ms=20, max_queue=3)
    with serving(slow(inf, 0.25), config) as port:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: predict(port, CAT.read_bytes()), range(12)))
        statuses = [a.status for a in answers]
        assert set(statuses) <= {200, 503} and statuses.count(503) >= 1 and statuses.count(200) >= 3, statuses
        for answer in answers:
            if answer.status == 503:
                assert answer.headers["retry-after"] == "1" and "--max-queue" in answer.json["detail"]
            else:
                assert_same_top(answer.json, reference[CAT.name])
        assert metric(port, 'resnets_requests_total{endpoint="/v1/predict",status="503"}') == statuses.count(503)
        assert metric(port, "resnets_requests_in_progress") == 0


def test_a_client_that_disconnects_does_not_poison_the_batch(inf: Inference, reference: dict) -> None:
    model = slow(inf, 0.4)
    with serving(model, ServeConfig(max_batch=4, max_delay_ms=100)) as port:
        busy = threading.Thread(target=predict, args=(port, CAT.read_bytes()))
        busy.start()  # occupies the model thread for 0.4 s
        time.sleep(0.15)
        data = CAT.read_bytes()
        with socket.create_connection(("127.0.0.1", port)) as quitter:  # sends a whole request, then leaves
            quitter.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            time.sleep(0.05)
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: predict(port, data), range(3)))
        busy.join()
        for answer in answers:
            assert answer.status == 200
            assert_same_top(answer.json, reference[CAT.name])
        deadline = time.monotonic() + 5
        while metric(port, 'resnets_requests_total{endpoint="/v1/predict",status="499"}') < 1:
            assert time.monotonic() < deadline, "the disconnected request was never accounted for"
            time.sleep(0.05)
        assert metric(port, "resnets_cancelled_total") == 1  # dropped before its model call, not computed
        assert sum(model.model.batches) == 4 + 1 + 1 + 3  # warm-up (4, 1), busy, the three: not it


class Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the model is broken")


def test_a_failing_model_is_reported_not_hung(inf: Inference) -> None:
    """A model that fails its warm-up leaves /readyz at 503 naming the cause; requests get a JSON 500."""
    from resnets.serve import background_server, create_app

    broken = Inference(Broken(), inf.preprocessing, inf.classes, inf.name, inf.weights)
    with background_server(create_app(broken, ServeConfig()), wait_ready=False) as port:
        deadline = time.monotonic() + 10
        while (ready := request(port, "GET", "/readyz")).json["error"] == "warming_up":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ready.status == 503 and "the model is broken" in ready.json["detail"]
        answer = predict(port, CAT.read_bytes())
        assert answer.status == 500 and "the model is broken" in answer.json["detail"]
        assert request(port, "GET", "/healthz").status == 200


def test_api_key(inf: Inference) -> None:
    with serving(inf, ServeConfig(api_key="s3cret-key")) as port:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret-ke"}):
            answer = predict(port, CAT.read_bytes(), headers=headers)
            assert answer.status == 401 and "API key" in answer.json["detail"]
            assert answer.headers["www-authenticate"] == "Bearer"
        assert request(port, "GET", "/metrics").status == 401
        for headers in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
            assert predict(port, CAT.read_bytes(), headers=headers).status == 200
        assert request(port, "GET", "/healthz").status == 200  # probes and the page stay open
        assert request(port, "GET", "/").status == 200
        assert metric(port, 'resnets_requests_total{endpoint="/v1/predict",status="401"}',
                      {"X-API-Key": "s3cret-key"}) == 3


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_and_exits_0(reference: dict) -> None:
    """``resnets serve`` in a subprocess: a request waiting in the batcher when SIGTERM arrives is answered."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "serve", "--model", "resnet20", "--weights", WEIGHTS,
                             "--port", str(port), "--max-delay-ms", "1500", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(proc, port)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(predict, port, CAT.read_bytes())
            while metric(port, "resnets_queue_depth") < 1:  # waiting for its batch (1.5 s)
                assert not pending.done(), pending.result().body
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            answer = pending.result(timeout=30)
        assert answer.status == 200
        assert_same_top(answer.json, reference[CAT.name])
        assert proc.wait(timeout=30) == 0, proc.stdout.read()
        with pytest.raises(OSError):
            request(port, "GET", "/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_bad_options(capsys) -> None:
    from resnets.cli import main

    for args, words in ((["--max-batch", "0"], "--max-batch"), (["--precision", "int8"], "--calibration"),
                        (["--body-timeout", "0"], "--body-timeout must be positive"),
                        (["--decode-memory-mb", "-1"], "--decode-memory-mb must be positive"),
                        (["--precision", "fp16"], "does not run on the CPU")):
        with pytest.raises(SystemExit) as exit_info:  # usage errors: before any model is loaded
            main(["serve", "--model", "resnet20", "--weights", WEIGHTS, *args])
        assert exit_info.value.code == 2 and words in capsys.readouterr().err


def serve_args(*argv: str):
    """``resnets serve ARGV`` as the command line parses it."""
    from resnets.cli import build_parser

    return build_parser().parse_args(["serve", *argv])


def test_serve_decides_the_network_from_the_weights(tmp_path: Path) -> None:
    """Without --model, serve takes the network the weights name (a registry name or a trained file), as
    predict does; its model and precision options are those of predict and eval (eval's: int8 calibrates on
    --calibration DIR), word for word."""
    import resnets
    from resnets.cli import build_parser
    from resnets.cli.serve import load_served

    served = load_served(serve_args("--weights", WEIGHTS))
    assert (served.name, served.weights, served.device.type) == ("resnet20", WEIGHTS, "cpu")
    model = resnets.resnet20(weights=WEIGHTS)
    trained = tmp_path / "best.safetensors"
    resnets.weights.save_safetensors(model.state_dict(), trained, model.pretrained_cfg)
    assert load_served(serve_args("--weights", str(trained))).name == "resnet20"
    with pytest.raises(ValueError, match="not a resnet32"):
        load_served(serve_args("--model", "resnet32", "--weights", str(trained)))
    parsers = build_parser()._subparsers._group_actions[0].choices
    for command in ("eval", "serve"):
        parsers[command].add_deferred_options()
    options = {command: {a.option_strings[-1]: (a.help, a.default, a.choices) for a in parsers[command]._actions
                         if a.option_strings} for command in ("eval", "serve")}
    for flag in ("--model", "--weights", "--precision", "--backend", "--verbose"):
        assert options["serve"][flag] == options["eval"][flag], flag


def test_the_api_key_comes_from_the_environment_or_a_file(tmp_path: Path, monkeypatch, caplog) -> None:
    from resnets.cli import build_parser
    from resnets.cli.common import UsageError
    from resnets.cli.serve import serve_config

    monkeypatch.delenv("RESNETS_API_KEY", raising=False)
    assert serve_config(serve_args()).api_key is None
    monkeypatch.setenv("RESNETS_API_KEY", "from-the-environment")
    assert serve_config(serve_args()).api_key == "from-the-environment"
    assert serve_config(serve_args("--api-key", "from-the-flag")).api_key == "from-the-flag"
    key = tmp_path / "key"
    key.write_text("from-the-file\n")
    key.chmod(0o600)
    with caplog.at_level("WARNING", logger="resnets.serve"):
        assert serve_config(serve_args("--api-key-file", str(key))).api_key == "from-the-file"
        assert not caplog.records
        key.chmod(0o644)
        serve_config(serve_args("--api-key-file", str(key)))
        assert "can be read by other users" in caplog.text
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for argv, words in ((["--api-key", "k", "--api-key-file", str(key)], "not both"),
                        (["--api-key-file", str(tmp_path / "missing")], "missing: cannot read it"),
                        (["--api-key-file", str(empty)], "first line is empty")):
        with pytest.raises(UsageError, match=words):
            serve_config(serve_args(*argv))
    monkeypatch.setenv("RESNETS_API_KEY", " ")
    with pytest.raises(UsageError, match="RESNETS_API_KEY"):
        serve_config(serve_args())
    helps = {a.option_strings[0]: a.help for a in build_parser()._subparsers._group_actions[0].choices["serve"]._actions
             if a.option_strings}
    assert "RESNETS_API_KEY" in helps["--api-key"] and "ps" in helps["--api-key"]
    assert "--api-key-file" in helps["--api-key"] and "RESNETS_API_KEY" in helps["--api-key-file"]


def test_a_compiled_model_runs_only_at_its_warmed_up_batch_sizes(inf: Inference, reference: dict) -> None:
    """resnets.optimize's compiled models get static batch sizes: powers of two up to max_batch, padded."""
    assert batch_sizes(16) == (1, 2, 4, 8, 16) and batch_sizes(12) == (1, 2, 4, 8, 12) and batch_sizes(1) == (1,)
    assert batch_sizes(1024) == (8, 16, 32, 64, 128, 256, 512, 1024)
    served = slow(inf, 0.3)
    served.model.compiled = True  # as resnets.optimize marks them; the sizes are checked, not compiled
    with serving(served, ServeConfig(max_batch=8, max_delay_ms=300)) as port:
        assert served.model.batches == [1, 2, 4, 8]  # the warm-up compiles each size
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: predict(port, CAT.read_bytes()), range(3)))
    for answer in answers:
        assert answer.status == 200 and answer.json["batch_size"] == 3
        assert_same_top(answer.json, reference[CAT.name])  # the padding's rows do not leak into the answers
    assert served.model.batches[4:] == [4]

    from resnets.serve.models import compiles_per_shape

    class OpenVinoLike(nn.Module):  # an engine taking any batch size, whose compiled(hint) is a method
        def compiled(self, hint: str) -> None: ...

    assert compiles_per_shape(served.model) and not compiles_per_shape(OpenVinoLike())


# --- the batcher on its own ------------------------------------------------------------------------------

def test_batcher_groups_by_key_bounds_its_queue_and_drains_on_close() -> None:
    import asyncio

    calls: list[tuple[str, int]] = []

    class Scale(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append((self.name, len(x)))
            time.sleep(0.05)
            return x * (2 if self.name == "double" else 3)

    def lookup(key):
        return Scale(key[0])

    batcher = Batcher(lookup, max_batch=3, max_delay_s=0.2, max_queue=7, metrics=Metrics())

    async def main():
        jobs = [batcher.submit(("double" if i % 2 else "triple", (1,)), torch.tensor([float(i)])) for i in range(7)]
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):  # all 7 wait: the model thread has not started yet
            await batcher.submit(("double", (1,)), torch.tensor([0.0]))
        batcher.start()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    batcher.close()
    assert [r.output.item() for r in results] == [i * (2 if i % 2 else 3) for i in range(7)]
    assert sorted(calls) == [("double", 3), ("triple", 1), ("triple", 3)]  # never a mixed or oversized batch
    assert not batcher._thread.is_alive()
