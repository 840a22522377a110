"""optimize(backend="onnxruntime"): logits against eager PyTorch, int8 accuracy on real CIFAR images, CLI and errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from bn_reference import randomize_bn
from conftest import logits, split, top1
from torch import nn

import resnets
from resnets.cli import main
from resnets.inference import optimize

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.slow
def test_fp32_cifar_logits_match_eager(cifar_model: nn.Module, eager_logits: torch.Tensor) -> None:
    fast = optimize(cifar_model, "fp32", backend="onnxruntime")
    assert fast.precision == "fp32" and "onnxruntime" in repr(fast)
    got = logits(fast, split()[1])
    assert got.dtype == torch.float32 and got.shape == eager_logits.shape
    assert relative_error(got, eager_logits) < 1e-4


def test_fp32_feature_extractor_matches_eager_at_any_batch_size() -> None:
    model = randomize_bn(resnets.create_model("resnet18", num_classes=0)).eval()
    fast = optimize(model, "fp32", example_inputs=torch.zeros(1, 3, 64, 64), backend="onnxruntime")
    for n in (1, 3):  # exported with another batch size: the batch dimension is dynamic
        x = torch.randn(n, 3, 64, 64)
        with torch.no_grad():
            expected = model(x)
        got = fast(x)
        assert got.shape == expected.shape == (n, 512) and got.is_contiguous()
        assert relative_error(got, expected) < 1e-4


def test_int8_top1_within_05_points(cifar_model: nn.Module, eager_logits: torch.Tensor) -> None:
    calib, x, y = split()
    q = optimize(cifar_model, "int8", calibration=calib.split(100), backend="onnxruntime")
    out = logits(q, x)
    assert q.precision == "int8"
    assert abs(top1(out, y) - top1(eager_logits, y)) <= 0.5
    assert (out - eager_logits).abs().max() > 1e-3, "int8 outputs equal fp32: nothing was quantized"



def test_errors_name_the_problem() -> None:
    model = resnets.create_model("resnet20").eval()
    with pytest.raises(ValueError, match="compile"):
        optimize(model, "fp32", compile=True, backend="onnxruntime")
    with pytest.raises(ValueError, match="bf16"):
        optimize(model, "bf16", backend="onnxruntime")
    with pytest.raises(ValueError, match="backend"):
        optimize(model, "fp32", backend="tensorrt")
    fast = optimize(model, "fp32", backend="onnxruntime")
    with pytest.raises(ValueError, match=r"4 dims.*\(3, 32, 32\)"):
        fast(torch.zeros(3, 32, 32))


def test_int8_without_images_warns_or_refuses() -> None:
    model = resnets.create_model("resnet20").eval()
    with pytest.warns(UserWarning, match="real images"):
        optimize(model, "int8", example_inputs=torch.randn(4, 3, 32, 32), backend="onnxruntime")
    with pytest.raises(ValueError, match="calibration"):
        optimize(model, "int8", backend="onnxruntime")


def test_missing_onnxruntime_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ImportError, match=r"resnets\[onnx\]"):
        optimize(resnets.create_model("resnet20").eval(), "fp32", backend="onnxruntime")


@pytest.mark.slow
def test_cli_bench_names_the_onnxruntime_modes(capsys) -> None:
    pytest.importorskip("torchvision")
    assert main(["bench", "--model", "resnet18", "--weights", "none", "--batch", "2", "--precision", "fp32,bf16", "--no-compile",
                 "--backend", "torch,onnxruntime", "--input-size", "32", "--runs", "2", "--device", "cpu",
                 "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    # onnxruntime has no bf16 mode; its fp32 is timed against the same baseline, in the same rounds.
    assert [r["mode"] for r in results] == ["torchvision eager fp32", "resnets fp32", "resnets bf16",
                                            "onnxruntime fp32"]
    assert all(r["ratio"] > 0 and r["images_per_s"] > 0 for r in results)


def test_device_auto_with_onnxruntime_stays_on_the_cpu_even_with_a_gpu(monkeypatch) -> None:
    import resnets.pipeline as pipeline

    asked = []
    # what load_inference asks to resolve: "auto" would be a GPU on a GPU machine
    monkeypatch.setattr(pipeline, "resolve_device", lambda d: asked.append(d) or torch.device("cpu"))
    inf = pipeline.load_inference("resnet20", None, "fp32", device="auto", backend="onnxruntime")
    assert asked == ["cpu"] and inf.device.type == "cpu"
