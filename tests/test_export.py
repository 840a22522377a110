"""Export: ONNX (run by onnxruntime) and torch.export programs against eager PyTorch, and the CLI's checks."""

from __future__ import annotations

import pytest
import torch
from conftest import split

import resnets
from resnets.cli import main
from resnets.errors import BadInput, ExportMismatch
from resnets.inference import export_model
from resnets.inference.export import export_onnx, export_program, run_exported
from resnets.inference.prepare import prepare


@pytest.mark.slow
def test_onnx_fp32_matches_eager_on_real_images(cifar_model, tmp_path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    x = split()[1][:64]
    path = export_onnx(prepare(cifar_model, "fp32", x[:2]), tmp_path / "r20.onnx", x[:2])
    with torch.no_grad():
        expected = cifar_model(x)
    for batch in (x, x[:1], x[:7]):  # the batch size is dynamic
        got = run_exported(path, batch, "onnx")
        assert got.shape == (len(batch), 10)
        assert (got - expected[: len(batch)]).abs().max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["r20.onnx"]  # no temporary file left behind


def test_exported_program_fp32(cifar_model, tmp_path) -> None:
    x = split()[1][:16]
    path = export_program(prepare(cifar_model, "fp32", x[:2]), tmp_path / "r20.pt2", x[:2])
    with torch.no_grad():
        expected = cifar_model(x)
    got = run_exported(path, x, "exported-program")
    assert (got - expected).abs().max() < 1e-4


def test_cli_export_exit_codes(tmp_path, capsys) -> None:
    out = tmp_path / "m.pt2"
    args = ["export", "resnet20", "--weights", "none", "--format", "exported-program", "-o", str(out)]
    assert main(args) == 0
    assert out.is_file() and "max abs diff" in capsys.readouterr().out
    # The file's check fails loudly when the tolerance cannot be met.
    assert main([*args, "--tolerance", "1e-12"]) == 1
    err = capsys.readouterr().err
    assert "differs from eager PyTorch by more than the tolerance" in err and "the file was removed" in err
    assert not out.exists()
    for bad in (["--tolerance", "-1"], ["--input-size", "-32"], ["--input-size", "0"], ["-o", str(tmp_path)]):
        with pytest.raises(SystemExit) as e:
            main([*args[:-2], *(bad if bad[0] == "-o" else [*bad, "-o", str(out)])])
        assert e.value.code == 2, bad
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(SystemExit) as e:
        main(["export", "resnet20", "--weights", "none", "--format", "onnx", "--precision", "int8", "-o", str(tmp_path / "q.onnx")])
    assert e.value.code == 2


def test_export_model_from_python(tmp_path) -> None:
    """The CLI's whole workflow from Python: the file carries the weights' description and runs like eager; a
    file over the tolerance is removed and raises; bad arguments are BadInput before anything is written."""
    model = resnets.create_model(weights="resnet20.cifar10").eval()
    check = export_model(model, tmp_path / "m.pt2", "exported-program")
    assert check.relative < check.tolerance == 1e-4 and check.checked == 3
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert (run_exported(check.path, x, "exported-program") - model(x)).abs().max() < 1e-4
    with pytest.raises(ExportMismatch, match="the file was removed"):
        export_model(model, tmp_path / "bad.pt2", "exported-program", tolerance=1e-12)
    assert not (tmp_path / "bad.pt2").exists()
    for kwargs in ({"format": "onnx", "precision": "int8"}, {"format": "tflite"}, {"input_size": 16},
                   {"tolerance": -1.0}):
        with pytest.raises(BadInput):
            export_model(model, tmp_path / "x.onnx", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2"]


@pytest.mark.parametrize("name", ["resnetv2_18d", "seresnext26d_32x4d"])
def test_family_networks_export_to_both_formats_within_tolerance(name, tmp_path, capsys) -> None:
    """A pre-activation net with a deep stem and an SE-ResNeXt with average-pool downsampling: ONNX (checked with
    onnxruntime) and a torch.export program, each checked against eager by the command itself (exit 1 otherwise)."""
    pytest.importorskip("onnxruntime")
    for fmt, suffix in (("onnx", "onnx"), ("exported-program", "pt2")):
        out = tmp_path / f"{name}.{suffix}"
        assert main(["export", name, "--weights", "none", "--format", fmt, "--input-size", "64", "-o", str(out),
                     "--no-progress"]) == 0, capsys.readouterr().err
        assert out.stat().st_size > 1e6 and "max abs diff" in capsys.readouterr().out
