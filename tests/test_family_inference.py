"""Every block kind of the family through the fast-inference paths: half precision, int8, onnxruntime, OpenVINO,
ONNX export, compared with the eager model (random weights, non-trivial norms)."""

from __future__ import annotations

import pytest
import torch
from test_family import relative_error, small

from resnets.inference import optimize

KINDS = ["keras-v2", "timm-v2-basic", "bit", "resnext-se-d", "eca-tiered", "resnet-rs", "groupnorm", "wide-cifar"]


def batch(model, n: int = 2) -> torch.Tensor:
    size = 32 if model.stem_type == "cifar" else 64
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_follows_eager(kind):
    model = small(kind)
    x = batch(model)
    with torch.no_grad():
        expected = model(x)
    got = optimize(model, "bf16", compile=False)(x)
    assert got.dtype == torch.float32
    assert relative_error(got, expected) < 5e-2


ENGINE_CASES = [  # (backend, kind, tolerance): onnxruntime on every kind (three in the quick tier), OpenVINO on three
    *[pytest.param("onnxruntime", k, 1e-4, marks=[] if k in ("keras-v2", "bit", "eca-tiered") else pytest.mark.exhaustive)
      for k in KINDS],
    *[pytest.param("openvino", k, 1e-3, marks=pytest.mark.slow) for k in ("keras-v2", "bit", "eca-tiered")],
]


@pytest.mark.parametrize("backend, kind, tolerance", ENGINE_CASES)
def test_engine_fp32_matches_eager(backend, kind, tolerance):
    pytest.importorskip(backend)
    model = small(kind)
    x = batch(model)
    with torch.no_grad():
        expected = model(x)
    assert relative_error(optimize(model, "fp32", x, backend=backend)(x), expected) < tolerance


@pytest.mark.slow
@pytest.mark.parametrize("kind", [pytest.param("keras-v2", marks=pytest.mark.exhaustive), "resnext-se-d"])
def test_int8_follows_eager(kind):
    """Static int8 (torch backend, PT2E) on an attention net (and in the sweep a pre-activation one, whose int8 the
    suite checks on onnxruntime and OpenVINO below): logits within 10% of eager."""
    model = small(kind)
    x = batch(model, 8)
    with torch.no_grad():
        expected = model(x)
    calibration = [batch(model, 8) for _ in range(2)] + [x]
    got = optimize(model, "int8", example_inputs=x, calibration=calibration, backend="torch")(x)
    assert relative_error(got, expected) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_engine_int8_follows_eager_on_a_preactivation_net(backend):
    pytest.importorskip("onnxruntime" if backend == "onnxruntime" else "openvino")
    model = small("keras-v2")
    x = batch(model, 8)
    with torch.no_grad():
        expected = model(x)
    calibration = [batch(model, 8) for _ in range(2)] + [x]
    got = optimize(model, "int8", x, calibration=calibration, backend=backend)(x)
    assert relative_error(got, expected) < 0.1


def test_summary_and_list_cli_for_the_family(capsys):
    from resnets.cli import main

    assert main(["summary", "resnet50v2", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "25,568,360" in out  # ResNet50V2's parameters (tests/test_keras_v2.py compares the count with Keras')
    assert main(["list", "seresnext26*"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == ["seresnext26d_32x4d", "seresnext26t_32x4d"]
