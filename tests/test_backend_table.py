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
from resnets.inference.prepare import DTYPES
from resnets.inference.table import BACKENDS, DEFAULT_BACKEND, PRECISIONS, check, check_device


def test_cli_choices_name_the_table_entries_in_order() -> None:
    assert choices.PRECISIONS == tuple(PRECISIONS)
    assert choices.BACKENDS == tuple(BACKENDS)
    assert DEFAULT_BACKEND == "torch"
    parser = argparse.ArgumentParser()
    common.add_precision_options(parser)
    for name in BACKENDS:  # every backend is a --backend choice, every precision a --precision one
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
