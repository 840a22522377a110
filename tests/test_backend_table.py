"""The one table of precisions and backends: the CLI's torch-free names agree with it, and every reader uses it."""

from __future__ import annotations

import argparse
import json
import tarfile

import pytest
import torch
from conftest import CHECKPOINT, TEST_TAR

import resnets
from resnets import choices
from resnets.cli import common, main
from resnets.inference import optimize
from resnets.pipeline import load_inference
from resnets.inference.prepare import DTYPES
from resnets import cpu
from resnets.inference import table
from resnets.inference.table import BACKENDS, DEFAULT_BACKEND, FASTEST, PRECISIONS, check, check_device, choose_backend


def test_cli_choices_name_the_table_entries_in_order() -> None:
    assert choices.PRECISIONS == tuple(PRECISIONS)
    assert choices.BACKENDS == tuple(BACKENDS)
    assert DEFAULT_BACKEND == "auto" and choices.BACKEND_CHOICES == ("auto", *BACKENDS)
    parser = argparse.ArgumentParser()
    common.add_precision_options(parser)
    assert parser.parse_args([]).backend is None  # fp32: the eager network; other precisions: auto
    for name in choices.BACKEND_CHOICES:  # every backend is a --backend choice, every precision a --precision one
        args = parser.parse_args(["--backend", name, "--precision", "fp32"])
        assert args.backend == name
    for name in PRECISIONS:
        assert parser.parse_args(["--precision", name]).precision == name


def test_entries_are_consistent() -> None:
    for p in PRECISIONS.values():
        assert p.backends and set(p.backends) <= set(BACKENDS), p.name
        assert set(p.devices) <= {"cpu", "cuda"} and 0 < p.export_tolerance < 1
        assert DTYPES[p.name] is p.dtype
    # What each precision computes in, independently of the table.
    assert {n: DTYPES[n] for n in ("fp32", "bf16", "fp16")} == {
        "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    assert [n for n, p in PRECISIONS.items() if p.needs_calibration] == ["int8"]
    for b in BACKENDS.values():
        module = b.load()  # importing a backend module must not need its engine yet
        assert callable(module.build) and callable(module.describe), b.name
        assert b.precisions == tuple(n for n, p in PRECISIONS.items() if b.name in p.backends)
    assert BACKENDS["onnxruntime"].precisions == ("fp32", "int8")
    assert BACKENDS["openvino"].precisions == ("fp32", "bf16", "int8")
    assert BACKENDS["torch"].precisions == tuple(PRECISIONS)


def test_checks_name_the_problem_and_the_way_out() -> None:
    with pytest.raises(ValueError, match=r"fp16 needs a CUDA GPU \(the model is on cpu\); on the CPU use precision bf16"):
        check_device("fp16", "cpu")
    with pytest.raises(ValueError, match="int8 needs the CPU.*fp16 or bf16 on a GPU"):
        check_device("int8", "cuda")
    with pytest.raises(ValueError, match=r"onnxruntime backend runs fp32 and int8, not 'bf16' \(use backend='torch'"):
        check("onnxruntime", "bf16", "cpu")
    with pytest.raises(ValueError, match="openvino backend runs on the CPU; the model is on cuda.*--device cpu"):
        check("openvino", "fp32", "cuda")
    with pytest.raises(ValueError, match="backend must be one of torch, onnxruntime, openvino"):
        check("tensorrt", "fp32", "cpu")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, int8"):
        check("torch", "fp8", "cpu")
    assert check("torch", "fp16", "cuda") is BACKENDS["torch"]


def test_optimize_refuses_options_of_another_backend() -> None:
    model = resnets.create_model("resnet20").eval()
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(ValueError, match=r"compile= apply to backend='torch'"):
            optimize(model, "fp32", compile=True, backend=backend)
        with pytest.raises(ValueError, match=r"cuda_graphs= apply to backend='torch'"):
            optimize(model, "fp32", cuda_graphs=True, backend=backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cli_eval_with_another_engine_gives_torchs_top1(backend: str, tmp_path, capsys) -> None:
    pytest.importorskip(backend)
    if not TEST_TAR.is_file() or not CHECKPOINT.is_file():
        pytest.skip(f"{TEST_TAR} or {CHECKPOINT} not found")
    subset = tmp_path / "test.tar"  # 500 real test JPEGs, 50 per class
    with tarfile.open(TEST_TAR) as src, tarfile.open(subset, "w") as dst:
        for member in src:
            if member.isdir() or (member.isfile() and int(member.name.rsplit("/", 1)[1].split(".")[0]) < 50):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    top = {}
    for engine in ("torch", backend):
        assert main(["eval", str(subset), "--model", "resnet20", "--weights", str(CHECKPOINT), "--json",
                     "--workers", "0", "--backend", engine]) == 0
        top[engine] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"]
    assert 70 < top["torch"] < 95
    assert abs(top[backend] - top["torch"]) <= 0.1


# /proc/cpuinfo flags of three real machines this project ran on (abridged to the flags that matter and a few others).
XEON_AMX = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni"
EPYC_ZEN4 = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16"
EPYC_AVX2 = "fpu sse2 avx avx2 fma"


@pytest.mark.parametrize("flags, kind, native_bf16", [
    (XEON_AMX, "amx", True), (EPYC_ZEN4, "avx512-bf16", True), (EPYC_AVX2, "avx2", False),
    ("fpu sse2 avx avx2 avx512f avx512_vnni", "avx512", False), ("fp asimd", "other", False)])
def test_cpu_kind_from_flags(flags, kind, native_bf16) -> None:
    info = cpu.CpuInfo("x", frozenset(flags.split()))
    assert info.kind == kind and info.native_bf16 is native_bf16 and kind in cpu.KINDS
    assert info.describe().startswith("x (")


def test_this_machines_cpu_is_read() -> None:
    info = cpu.cpu_info()
    assert info.kind in cpu.KINDS and info.name
    assert resnets.inference.table.choose_backend("fp32").reason.endswith(info.describe())


def _pretend(monkeypatch, flags: str, engines: set[str]) -> None:
    monkeypatch.setattr(table, "cpu_info", lambda: cpu.CpuInfo("test CPU", frozenset(flags.split())))
    monkeypatch.setattr(table, "installed", lambda name, precision: name in engines)


@pytest.mark.parametrize("flags, engines, expected", [
    # int8: OpenVINO wherever it is installed; torch's int8 only where it beats the rest (AMX without OpenVINO).
    (EPYC_ZEN4, {"torch", "onnxruntime", "openvino"}, {"fp32": "openvino", "bf16": "openvino", "int8": "openvino"}),
    (EPYC_ZEN4, {"torch", "onnxruntime"}, {"fp32": "onnxruntime", "bf16": "torch", "int8": "onnxruntime"}),
    (XEON_AMX, {"torch", "onnxruntime", "openvino"}, {"fp32": "onnxruntime", "bf16": "openvino", "int8": "openvino"}),
    (XEON_AMX, {"torch", "onnxruntime"}, {"fp32": "onnxruntime", "bf16": "torch", "int8": "torch"}),
    # No native bf16: OpenVINO refuses it, so torch's emulated bf16 is all there is.
    (EPYC_AVX2, {"torch", "onnxruntime", "openvino"}, {"fp32": "openvino", "bf16": "torch", "int8": "openvino"}),
    (EPYC_AVX2, {"torch"}, {"fp32": "torch", "bf16": "torch", "int8": "torch"}),
])
def test_auto_picks_the_fastest_installed_backend_for_the_cpu(monkeypatch, flags, engines, expected) -> None:
    _pretend(monkeypatch, flags, engines)
    assert {p: choose_backend(p, "cpu").backend for p in expected} == expected
    assert choose_backend("fp16", "cuda").backend == "torch"
    reason = choose_backend("int8", "cpu").reason
    assert "test CPU" in reason and ("not installed: pip install 'resnets[openvino]'" in reason) == (
        "openvino" not in engines)


def test_a_missing_engine_is_named_with_the_extra_that_installs_it(monkeypatch) -> None:
    """torch is always there, but its int8 needs torchao (the int8 extra): the hint names that extra."""
    _pretend(monkeypatch, EPYC_AVX2, set())
    reason = choose_backend("int8", "cpu").reason
    assert "torch is not installed: pip install 'resnets[int8]'" in reason, reason
    assert "onnxruntime is not installed: pip install 'resnets[onnx]'" in reason, reason
    assert BACKENDS["torch"].extras("fp32") == () and BACKENDS["openvino"].extras("int8") == ("openvino",)


def test_auto_resolves_in_optimize_and_load_inference(monkeypatch) -> None:
    _pretend(monkeypatch, EPYC_AVX2, {"torch", "onnxruntime"})
    model = resnets.resnet20()
    assert optimize(model, "fp32").__class__.__name__ == "OrtModel"  # auto: the fastest installed here
    assert optimize(model, "fp32", compile=False).__class__.__name__ == "InferenceModel"  # torch's own options
    inf = load_inference("resnet20", None, "fp32", backend="auto")
    assert inf.backend == "onnxruntime" and "fastest fp32 backend installed" in inf.backend_reason
    eager = load_inference("resnet20", None)  # no backend named: fp32 is the network itself
    assert eager.backend == "eager" and eager.model.__class__.__name__ == "ResNet"
    assert "fp32 on eager" in eager.describe()


def _ranking(files: tuple[str, ...], precision: str) -> list[str]:
    """Backends by the mean of their batch-1 and batch-16 speed-ups in the recorded ``resnets bench`` reports."""
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    ratios: dict[str, list[float]] = {}
    for file in files:
        for r in json.loads((root / file).read_text())["results"]:
            mode = r["mode"].replace("resnets ", "torch ")
            backend, _, p = mode.partition(" ")
            if p == precision and backend in BACKENDS and r["batch"] in (1, 16) and r["ratio"]:
                ratios.setdefault(backend, []).append(r["ratio"])
    return sorted(ratios, key=lambda b: -sum(ratios[b]) / len(ratios[b]))


@pytest.mark.parametrize("kind", [k for k, m in FASTEST.items() if m.files])
def test_the_orders_follow_the_recorded_benchmarks(kind) -> None:
    measured = FASTEST[kind]
    for precision, order in measured.order.items():
        ranked = _ranking(measured.files, precision)
        assert ranked, (kind, precision, "no measurement")
        assert [b for b in order if b in ranked] == ranked, (kind, precision, ranked)
