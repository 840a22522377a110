"""optimize(backend="openvino"): logits against eager PyTorch, accuracy guards on real images, the disk cache,
the benchmark_app-style reference, the CLI and the errors."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch
from bn_reference import randomize_bn
from conftest import SHARED, logits, split, top1
from torch import nn

import resnets
from resnets.cli import main
from resnets.inference import optimize
from resnets.inference.table import BACKENDS

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

PRECISIONS = BACKENDS["openvino"].precisions
SAMPLES = SHARED / "data" / "imagenet-samples"


@pytest.fixture(autouse=True, scope="module")
def own_cache(tmp_path_factory):
    """Every compiled file of this module in a fresh cache: nothing from an earlier run is reused by accident."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def needs_native(precision: str) -> None:
    if precision == "bf16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no native bf16")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.slow
def test_fp32_matches_eager_in_latency_and_throughput_modes() -> None:
    model = randomize_bn(resnets.create_model("resnet18", num_classes=0)).eval()
    fast = optimize(model, "fp32", example_inputs=torch.zeros(1, 3, 64, 64), backend="openvino")
    # A batch of one runs on the LATENCY-compiled model; 3 and 5 are split across the THROUGHPUT streams
    # (uneven chunks), so row order and every chunk's output are checked against eager.
    for n in (1, 3, 5):
        x = torch.randn(n, 3, 64, 64)
        with torch.no_grad():
            expected = model(x)
        got = fast(x)
        assert got.dtype == torch.float32 and got.shape == expected.shape == (n, 512) and got.is_contiguous()
        assert relative_error(got, expected) < 1e-4
    assert fast.streams >= 1 and "openvino" in repr(fast)


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_cifar_top1_within_05_points_of_fp32(precision: str, cifar_model: nn.Module, eager_logits: torch.Tensor) -> None:
    needs_native(precision)
    calib, x, y = split()  # 2,000 real test JPEGs; int8 calibrates on 500 others
    fast = optimize(cifar_model, precision, calibration=calib.split(100), backend="openvino")
    out = logits(fast, x)
    fp32 = top1(eager_logits, y)
    assert 75 < fp32 < 90  # the checkpoint's published 81.0% on the JPEG test set
    assert abs(top1(out, y) - fp32) <= 0.5
    if precision == "fp32":
        assert relative_error(out, eager_logits) < 1e-4
    else:  # really computed in the lower precision, not silently in fp32
        assert (out - eager_logits).abs().max() > 1e-3


@pytest.mark.slow
def test_second_build_reuses_the_cached_files(cifar_model: nn.Module) -> None:
    calib = list(split()[0][:200].split(100))
    first = optimize(cifar_model, "int8", calibration=calib, backend="openvino")
    first(calib[0])
    folder = first.path.parent
    stamps = {p: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}
    assert {folder / "model.xml", folder / "model.bin", first.path, first.path.with_suffix(".bin")} <= set(stamps)
    assert any((folder / "compiled").iterdir()), "no compiled blob was cached"
    start = time.perf_counter()
    again = optimize(cifar_model, "int8", calibration=calib, backend="openvino")
    assert again.path == first.path and time.perf_counter() - start < 10
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()} == stamps  # nothing rewritten
    assert torch.equal(again(calib[0]), first(calib[0]))
    # Other calibration images make another int8 file; other weights another folder.
    other = optimize(cifar_model, "int8", calibration=calib[::-1][:1], backend="openvino")
    assert other.path != first.path and other.path.parent == folder
    changed = resnets.create_model("resnet20").eval()
    assert optimize(changed, "fp32", backend="openvino").path.parent != folder


@pytest.mark.slow
def test_feature_extractors_of_the_same_weights_are_cached_apart() -> None:
    from resnets.pipeline import StageFeatures

    net = randomize_bn(resnets.create_model("resnet18")).eval()
    x = torch.randn(2, 3, 64, 64)
    for pooling in ("avg", "max"):  # same weights and repr: only what they compute differs
        extractor = StageFeatures(net, 3, pooling).eval()
        with torch.no_grad():
            expected = extractor(x)
        got = optimize(extractor, "fp32", example_inputs=x, backend="openvino")(x)
        assert relative_error(got, expected) < 1e-4, pooling


def test_direct_reference_runs_the_same_file_like_benchmark_app() -> None:
    from resnets.inference.bench import Runner, compare
    from resnets.inference.ov import direct_benchmark

    model = resnets.create_model("resnet20").eval()
    fast = optimize(model, "fp32", backend="openvino")
    batch = torch.randn(4, 3, 32, 32)
    direct = direct_benchmark(fast, batch)
    assert isinstance(direct, Runner) and direct.name == "OpenVINO direct fp32"
    assert direct.images_per_call == 4 * direct.requests_per_call and direct.requests_per_call >= 2
    results = compare({"eager": model, "openvino fp32": fast, direct.name: direct}, batch, "eager", runs=3, warmup=1)
    r = results[-1]
    assert len(direct.latencies_ms) == (1 + 3) * direct.requests_per_call  # the engine's own request latencies
    assert r.images_per_s > 0 and r.latency_ms_p90 >= r.latency_ms_median > 0 and "requests" in r.note


@pytest.mark.slow
def test_cli_bench_times_openvino_next_to_its_direct_reference(capsys) -> None:
    pytest.importorskip("torchvision")
    assert main(["bench", "--model", "resnet18", "--weights", "none", "--batch", "1,2", "--precision", "fp32,int8",
                 "--no-compile", "--backend", "torch,openvino", "--input-size", "32", "--runs", "2",
                 "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    modes = [r["mode"] for r in report["results"] if r["batch"] == 2]
    # torch int8 needs compiling (--no-compile leaves it out); every openvino mode is followed by its reference.
    assert modes == ["torchvision eager fp32", "resnets fp32", "openvino fp32", "OpenVINO direct fp32",
                     "openvino int8", "OpenVINO direct int8"]
    assert report["engines"]["openvino"] == ov.__version__
    assert all(r["ratio"] > 0 and r["latency_ms_p90"] > 0 for r in report["results"])



@pytest.mark.slow
def test_errors_name_the_problem(monkeypatch) -> None:
    model = resnets.create_model("resnet20").eval()
    with pytest.raises(ValueError, match=r"openvino backend runs fp32 and bf16 and int8, not 'fp16'"):
        optimize(model, "fp16", backend="openvino")
    with pytest.raises(ValueError, match="calibration"):
        optimize(model, "int8", backend="openvino")
    fast = optimize(model, "fp32", backend="openvino")
    with pytest.raises(ValueError, match=r"4 dims.*\(3, 32, 32\)"):
        fast(torch.zeros(3, 32, 32))
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(ImportError, match=r"resnets\[openvino\]"):
        optimize(model, "fp32", backend="openvino")


def photo_classifier(x: torch.Tensor) -> nn.Module:
    """ResNet-18 with random convolutions whose top-1 still means something on real photos (bottleneck nets
    under OpenVINO, int8 included, are tests/test_family_inference.py's).

    Random weights alone give nearly tied logits (one class wins every photo), so: BatchNorm statistics
    measured on the odd photos (activations in a trained network's range), and a head with one class per
    photo, its row the photo's own centred, normalised feature, so that each photo's top-1 is itself by a
    margin that only its features' fidelity keeps.
    """
    torch.manual_seed(0)
    model = resnets.create_model("resnet18")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a plain average over the batch
            m.reset_running_stats()
    with torch.no_grad():
        model.train()(x[1::2])
        model.eval().fc = nn.Identity()
        raw = model(x)
        mean = raw[1::2].mean(0)
        rows = (raw - mean) / (raw - mean).norm(dim=1, keepdim=True)
        model.fc = nn.Linear(rows.shape[1], len(x))
        model.fc.weight.copy_(rows)
        model.fc.bias.copy_(-(rows @ mean))
    return model.eval()


@pytest.fixture(scope="module")
def photos() -> tuple[list[Path], torch.Tensor, nn.Module, torch.Tensor]:
    """The 100 photos (paths, decoded batch), their photo_classifier and its fp32 top-1: built once for
    every precision."""
    from resnets.data.batches import file_batches
    from resnets.preprocess import IMAGENET_TORCH

    paths = sorted(Path(SAMPLES).glob("*.JPEG"))
    if len(paths) < 100:
        pytest.skip(f"{SAMPLES}: the 100 shared ImageNet photos not found")
    x = torch.cat([b.images for b, _ in file_batches(paths, IMAGENET_TORCH, batch_size=25, workers=0)])
    model = photo_classifier(x)
    expected = logits(model, x, batch=25).argmax(1)
    assert torch.equal(expected, torch.arange(len(x)))  # each photo is its own class in fp32
    return paths, x, model, expected


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_resnet18_top1_agrees_with_fp32_on_the_imagenet_samples(precision: str, photos) -> None:
    needs_native(precision)
    from resnets.data.batches import calibration_batches
    from resnets.preprocess import IMAGENET_TORCH

    paths, x, model, expected = photos
    # int8 calibrates on the even photos, as on a user's own folder; agreement is over all 100.
    fast = optimize(model, precision, calibration=calibration_batches(paths[::2], IMAGENET_TORCH), backend="openvino")
    agreement = (logits(fast, x, batch=25).argmax(1) == expected).float().mean().item()
    assert agreement >= 0.99
