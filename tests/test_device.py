"""--device and the device-independent half of CUDA inference: resolution, refusals, batch and output moves.

This machine has no GPU: what can be checked here is every decision made on the CPU side (which
device, what is refused, where a batch is sent and where the output comes back, when the GPU is
synchronised), with the meta device standing in for a GPU where a second device is needed.
benchmarks/gpu_check.py checks the rest on a real GPU; its CPU smoke run is the last test here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import resnets
from resnets.cli import build_parser, main
from resnets.device import model_device, resolve_device
from resnets.inference import InferenceModel, optimize
from resnets.inference.bench import interleaved_times
from resnets.pipeline import run_model

ROOT = Path(__file__).resolve().parents[1]
INFERENCE_COMMANDS = (["predict", "IMG"], ["features", "IMG", "-o", "OUT.npz"], ["eval", "IMG"], ["bench"])


@pytest.fixture
def no_gpu(monkeypatch):
    """As on this machine, also on one with a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_auto_and_cpu_resolve_to_the_cpu_without_a_gpu(no_gpu) -> None:
    assert resolve_device("auto") == resolve_device(None) == resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_a_gpu_without_one_is_refused_by_name(no_gpu, name: str) -> None:
    with pytest.raises(ValueError, match=f"device {name}: no CUDA GPU is available.*use --device cpu"):
        resolve_device(name)


def test_a_gpu_index_beyond_the_visible_ones_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"cuda:2: only 2 CUDA GPU\(s\) visible \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0,1"])
def test_malformed_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_model_device_follows_the_weights() -> None:
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(nn.BatchNorm2d(2, affine=False, device="meta")) == torch.device("meta")  # buffers only
    assert model_device(nn.ReLU()) == torch.device("cpu")


@pytest.mark.parametrize("command", INFERENCE_COMMANDS, ids=lambda c: c[0])
def test_cli_device_cuda_without_a_gpu_is_a_one_line_error(no_gpu, command, image, tmp_path, capsys) -> None:
    args = [a.replace("IMG", str(image)).replace("OUT.npz", str(tmp_path / "f.npz")) for a in command]
    code = main([*args, "--model", "resnet20", "--weights", "resnet20.cifar10", "--device", "cuda"]
                if command[0] != "bench" else [*args, "--model", "resnet20", "--weights", "none", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"resnets {command[0]}: error: device cuda: no CUDA GPU")
    assert not (tmp_path / "f.npz").exists()


@pytest.mark.parametrize("command", INFERENCE_COMMANDS, ids=lambda c: c[0])
def test_cli_device_and_fp16_are_options_of_every_inference_command(command) -> None:
    parser = build_parser()
    for device in ("auto", "cpu", "cuda", "cuda:3"):
        assert parser.parse_args([*command, "--device", device]).device == device
    assert parser.parse_args(command).device == "auto"
    precision = parser.parse_args([*command, "--precision", "fp16"]).precision
    assert precision in ("fp16", ["fp16"])
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*command, "--device", "tpu"])
    assert exit_info.value.code == 2


def test_fp16_on_the_cpu_is_refused_pointing_to_bf16(capsys, image) -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU.*use precision bf16"):
        optimize(resnets.create_model("resnet20"), "fp16")
    code = main(["predict", str(image), "--model", "resnet20", "--weights", "resnet20.cifar10", "--device", "cpu",
                 "--precision", "fp16", "--workers", "0"])
    assert code == 1 and "use precision bf16" in capsys.readouterr().err


def test_cuda_graphs_need_a_compiled_cuda_model() -> None:
    with pytest.raises(ValueError, match="cuda_graphs needs compile=True and a model on a CUDA device"):
        optimize(resnets.create_model("resnet20"), "fp32", cuda_graphs=True)
    assert optimize(resnets.create_model("resnet20"), "fp32", compile=False).cuda_graphs is False


class Recorder(nn.Module):
    """Weights on ``device``; records what each call receives and returns a fixed CPU tensor."""

    def __init__(self, device: str, output: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, device=device))
        self.output = output
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return self.output


def test_run_model_sends_the_batch_to_the_models_device_and_returns_cpu_float32() -> None:
    net = Recorder("meta", torch.ones(3, 10, dtype=torch.bfloat16))
    out = run_model(net, torch.rand(3, 3, 8, 8))
    assert net.seen[0].device == torch.device("meta") and net.seen[0].shape == (3, 3, 8, 8)
    assert out.device == torch.device("cpu") and out.dtype == torch.float32


def test_inference_model_moves_the_input_in_and_the_output_back() -> None:
    net = Recorder("meta", torch.ones(2, 4, 3, 3).contiguous(memory_format=torch.channels_last))
    out = InferenceModel(net, "bf16", compiled=False)(torch.rand(2, 3, 8, 8))
    x = net.seen[0]
    assert x.device == torch.device("meta") and x.dtype == torch.bfloat16
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert out.device == torch.device("cpu") and out.dtype == torch.float32 and out.is_contiguous()


def test_with_cuda_graphs_the_output_is_a_copy_not_the_graphs_buffer() -> None:
    buffer = torch.rand(2, 10)
    plain = InferenceModel(Recorder("cpu", buffer), "fp32", compiled=False)(torch.rand(2, 3, 4, 4))
    graphed = InferenceModel(Recorder("cpu", buffer), "fp32", compiled=False, cuda_graphs=True)(torch.rand(2, 3, 4, 4))
    assert plain.data_ptr() == buffer.data_ptr()  # fp32 on its own device: no copy needed without graphs
    assert graphed.data_ptr() != buffer.data_ptr() and torch.equal(graphed, buffer)


def test_timing_on_cuda_synchronises_around_every_timed_call(monkeypatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(f"sync {device}"))
    interleaved_times({"a": lambda: events.append("a"), "b": lambda: events.append("b")}, runs=2, warmup=1,
                      device="cuda:0")
    assert events == ["a", "b"] + ["sync cuda:0", "a", "sync cuda:0", "sync cuda:0", "b", "sync cuda:0"] * 2
    events.clear()
    interleaved_times({"a": lambda: events.append("a")}, runs=2, warmup=0, device="cpu")
    assert events == ["a", "a"]


def test_bench_on_the_cpu_defaults_to_its_native_precisions(capsys) -> None:
    code = main(["bench", "--model", "resnet18", "--weights", "none", "--device", "cpu", "--batch", "1", "--input-size", "32", "--runs",
                 "1", "--warmup", "0", "--no-compile", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["machine"]["device"] == "cpu" and "gpu" not in report["machine"]
    native_bf16 = ["resnets bf16"] if resnets.cpu.cpu_info().native_bf16 else []  # emulated bf16 is no fast path
    assert [r["mode"] for r in report["results"]] == ["torchvision eager fp32", "resnets fp32", *native_bf16]


@pytest.mark.slow
def test_gpu_check_quick_runs_every_part_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(out)], check=False, capture_output=True, text=True, timeout=120)
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert {k: p["status"] for k, p in parts.items()} == dict.fromkeys(
        ("accuracy", "bench", "train", "eval", "cuda_graphs"), "ok")
    accuracy = parts["accuracy"]
    assert "fp16 needs a CUDA GPU" in accuracy["fp16"]["refused"]
    assert accuracy["fp32"]["batches"]["4"]["max_rel_diff"] < 1e-4  # folding is exact up to rounding
    assert accuracy["bf16"]["batches"]["4"]["max_rel_diff"] < 5e-2 and accuracy["bf16"]["earlier_output_intact"]
    assert {r["mode"] for r in parts["bench"]["results"]} == {"torchvision eager fp32", "resnets fp32", "resnets bf16"}
    assert parts["train"]["bf16"]["epochs"] == 2 and parts["train"]["bf16"]["images_per_s_last_epoch"] > 0
    if "skipped" not in parts["eval"]:  # the real checkpoint on 100 real test images: about its 81%
        assert parts["eval"]["images"] == 100 and 65 <= parts["eval"]["top1"] <= 95
    assert "CUDA" in parts["cuda_graphs"]["skipped"]
