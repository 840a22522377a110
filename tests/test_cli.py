"""The resnets command line: commands exit 0, bad usage exits 2, errors have no traceback."""

import subprocess
import sys

import pytest
import torch

import resnets
from resnets.cli import main


def test_console_script_version():
    out = subprocess.run(["resnets", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"resnets {resnets.__version__}"


@pytest.mark.slow
def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "resnets", "list", "resnet56*"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["resnet56"]


def test_list(capsys):
    assert main(["list", "resnet5*"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == set(resnets.list_models("resnet5*"))
    # exact counts, as README's table: checked against torchvision's ResNet-50
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        expected = sum(p.numel() for p in torchvision.models.resnet50().parameters())
    assert rows["resnet50"][1:4] == [f"{expected:,}", "4.089", "G"] == ["25,557,032", "4.089", "G"]


def test_summary(capsys):
    assert main(["summary", "resnet50", "--input-size", "224"]) == 0
    out = capsys.readouterr().out
    assert "PyTorch parameters(): 25,557,032" in out and "Multiply-adds: 4.089 G" in out
    assert "Non-trainable params: 53,120" in out  # BN moving statistics, as the Keras tutorial counts them


@pytest.mark.parametrize("argv", [[], ["summary"], ["summary", "resnet51"], ["summary", "resnet50", "--input-size", "x"],
                                  ["frobnicate"]])
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_runtime_error_is_one_line_without_traceback(capsys):
    assert main(["summary", "resnet20", "--input-size", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("resnets summary: error:") and "Traceback" not in err and err.count("\n") == 1
    with pytest.raises(RuntimeError, match="Kernel size"):  # --debug: the exception itself, traceback and all
        main(["--debug", "summary", "resnet20", "--input-size", "0"])


def test_subcommand_help():
    out = subprocess.run(["resnets", "summary", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--input-size" in out.stdout
