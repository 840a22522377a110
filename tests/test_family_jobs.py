"""Family networks through the jobs: a pre-activation file (Keras V2 layout) and an SE-ResNeXt-D file through
``resnets predict``/``features``/``explain`` and the HTTP service, against the eager network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_family import randomize_norms

import resnets
from resnets.cli import main
from resnets.pipeline import load_inference
from resnets.preprocess import CIFAR10
from resnets.weights.entry import WeightsEntry, save_safetensors

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "examples" / "images").glob("*.jpg"))
NETS = {"resnet50v2": {"layers": [1, 1, 1, 1], "num_classes": 10},
        "seresnext26d_32x4d": {"layers": [1, 1, 1, 1], "num_classes": 10}}


@pytest.fixture(scope="module", params=list(NETS))
def weights(request, tmp_path_factory) -> Path:
    name = request.param
    torch.manual_seed(0)
    model = randomize_norms(resnets.create_model(name, **NETS[name]))
    entry = WeightsEntry(name=f"{name}.test", model=name, url=None, sha256=None, file_format="safetensors",
                         model_kwargs=NETS[name], preprocessing=CIFAR10, classes="cifar10")
    return save_safetensors(model.state_dict(), tmp_path_factory.mktemp(name) / "model.safetensors", entry)


def eager_probabilities(weights: Path, paths: list[Path]) -> np.ndarray:
    inf = load_inference(None, weights, device="cpu")
    x = torch.stack([inf.preprocessing(resnets.load_img(p)) for p in paths])
    with torch.no_grad():
        return inf.model.eval()(x).softmax(1).numpy()


def test_predict_and_features_cli_agree_with_the_eager_network(weights, tmp_path, capsys):
    assert main(["predict", "--weights", str(weights), "--top", "3", "--json", *map(str, IMAGES)]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    probs = eager_probabilities(weights, IMAGES)
    assert len(answers) == len(IMAGES)
    for answer, p in zip(answers, probs):
        top = answer["predictions"][0]
        assert int(top["id"]) == int(p.argmax()) and top["probability"] == pytest.approx(float(p.max()), abs=1e-4)
    out = tmp_path / "features.npz"
    assert main(["features", "--weights", str(weights), "--output", str(out), *map(str, IMAGES)]) == 0
    feats = np.load(out)["features"]
    inf = load_inference(None, weights, device="cpu")
    x = torch.stack([inf.preprocessing(resnets.load_img(p)) for p in IMAGES])
    with torch.no_grad():
        expected = inf.model.eval().forward_head(inf.model.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)


def test_explain_cli_draws_each_image(weights, tmp_path):
    assert main(["explain", "--weights", str(weights), "--output-dir", str(tmp_path), *map(str, IMAGES)]) == 0
    assert len(list(tmp_path.glob("*.png"))) >= len(IMAGES)


def test_service_predicts_and_explains_with_the_family_network(weights):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("multipart")
    from serve_server import request, serving

    from resnets.serve import ServeConfig

    inf = load_inference(None, weights, device="cpu")
    cat = ROOT / "examples" / "images" / "cifar10_cat.jpg"
    p = eager_probabilities(weights, [cat])[0]
    with serving(inf, ServeConfig(max_batch=4, max_delay_ms=50)) as port:
        answer = request(port, "POST", "/v1/predict?top=1", cat.read_bytes(), {"Content-Type": "image/jpeg"})
        assert answer.status == 200, answer.body[:300]
        top = answer.json["predictions"][0]
        assert int(top["id"]) == int(p.argmax()) and abs(top["probability"] - float(p.max())) < 1e-4
        explained = request(port, "POST", "/v1/explain", cat.read_bytes())
        assert explained.status == 200 and explained.headers["content-type"] == "image/png"
        assert int(explained.headers["x-class-index"]) == int(p.argmax())
