"""A newcomer's walkthrough (issue 16): quiet output, fast start, honest help, the Keras face as Keras users expect."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnets
from resnets import progress, quiet
from resnets.cli import build_parser, main
from resnets.classes import folder_class_indices as class_index
from resnets.train.config import RECIPES

CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PROGRESS_COMMANDS = ("predict", "features", "eval", "bench", "export", "train", "experiment")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def subparsers(parser: argparse.ArgumentParser, prefix: str = "resnets"):
    """Every (name, parser) below ``parser``, deferred options added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sub.add_deferred_options()
                yield f"{prefix} {name}", sub
                yield from subparsers(sub, f"{prefix} {name}")


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[-1] if a.option_strings else a.dest: a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))}


def image_folder(root: Path, classes, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


# --- start-up -------------------------------------------------------------------------------------------


def test_help_and_version_import_no_torch():
    code = """
import sys
from resnets.cli import main
for argv in (["--help"], ["--version"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, e.code
assert "torch" not in sys.modules, "resnets --help imported torch"
import resnets
assert "torch" not in sys.modules
from resnets import ResNet50, resnet50, __all__
assert "torch" in sys.modules and callable(ResNet50) and callable(resnet50) and "resnet50" in __all__
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert "usage: resnets" in out.stdout and "resnets 0.1.0" in out.stdout


def test_light_commands_help_without_torch():
    """Only the commands whose help quotes the training recipes (which import torch) may import it."""
    code = """
import sys
from resnets.cli import main
for cmd in ("list", "summary", "weights", "predict", "features", "eval", "explain", "plot", "export", "bench",
            "serve"):
    try:
        main([cmd, "--help"])
    except SystemExit:
        pass
print(sorted(m for m in ("torch", "torchvision", "numpy") if m in sys.modules))
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_lazy_package_keeps_the_public_names():
    assert set(resnets.__all__) >= {"ResNet50", "resnet50", "plain56", "create_model", "optimize", "explain"}
    assert callable(resnets.explain) and resnets.explain.__name__ == "explain"  # the function, not the module
    import resnets.explain as module_or_function  # noqa: F401 - importing the submodule must not rebind it

    assert callable(resnets.explain)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        resnets.nope  # noqa: B018


def test_package_namespace_holds_only_the_api_and_subpackages():
    """Issue 30: ``resnets.sys``, ``resnets.importlib`` and ``resnets.Any`` leaked from the package's own imports.
    Every public name is in ``__all__``, a submodule of resnets (bound once imported), or ``BUILDERS``."""
    resnets.create_model("resnet20")  # imports a good share of the submodules
    leaked = {name: type(getattr(resnets, name)).__name__ for name in dir(resnets)
              if not name.startswith("_") and name not in resnets.__all__ and name != "BUILDERS"
              and getattr(getattr(resnets, name), "__name__", None) != f"resnets.{name}"}
    assert leaked == {}
    for name in ("sys", "importlib", "types", "Any", "annotations"):
        assert not hasattr(resnets, name), name


# --- help texts -----------------------------------------------------------------------------------------


def test_every_option_of_every_command_has_help_with_its_default():
    missing, no_default = [], []
    for name, parser in subparsers(build_parser()):
        for opt, action in options(parser).items():
            text = action.help or ""
            if not text.strip():
                missing.append(f"{name} {opt}")
            elif action.option_strings and "default" not in text and "required" not in text:
                no_default.append(f"{name} {opt}")
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help states no default: {no_default}"


def test_help_wording():
    parsers = dict(subparsers(build_parser()))
    assert "--calibration" in options(parsers["resnets eval"])["--precision"].help
    assert "int8 calibrates on the input" in options(parsers["resnets predict"])["--precision"].help
    assert parsers["resnets list"].description.startswith("Print a table")
    devices = {options(p)["--device"].help for n, p in parsers.items() if "--device" in options(p)}
    assert len(devices) == 1 and "train" in " ".join(n for n, p in parsers.items() if "--device" in options(p))
    caches = {n: options(p)["--cache-dir"].help for n, p in parsers.items() if "--cache-dir" in options(p)}
    assert caches and all("RESNETS_CACHE" in h for h in caches.values()), caches
    for cmd in PROGRESS_COMMANDS:
        assert "--no-progress" in options(parsers[f"resnets {cmd}"]), cmd
    epochs = options(parsers["resnets train"])["--epochs"].help
    assert f"fast-cifar {RECIPES['fast-cifar']['epochs']}" in epochs and "paper-cifar 64,000 steps" in epochs  # the recipes' own values


@pytest.mark.parametrize("depths, message", [("8,20", "8 has no registered plain"), ("21", "not of the form 6n+2"),
                                             ("x", "comma-separated integers")])
def test_experiment_depths_are_checked_before_training(depths, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment", "degradation", "--data", "nowhere", "--depths", depths])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "choose from 20, 32, 44, 56, 110" in err or message in err


# --- broken pipe ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["list", "resnet2*"], ["summary", "resnet20"]])
def test_closed_pipe_stops_quietly(argv):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte, like 'resnets list | head -0'
    try:
        proc = subprocess.run([sys.executable, "-m", "resnets", *argv], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=300)
    finally:
        os.close(write)
    assert proc.returncode in (0, 141), proc.stderr
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr


def test_head_of_a_pipe_stops_quietly():
    proc = subprocess.run("resnets summary resnet20 | head -2", shell=True, capture_output=True, text=True,
                          timeout=300)
    assert len(proc.stdout.splitlines()) == 2 and proc.stderr == ""


# --- noise ----------------------------------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_known_warnings_are_dropped_only_inside_our_calls(monkeypatch):
    monkeypatch.delenv("RESNETS_DEBUG", raising=False)
    cpp, pytree = logging.getLogger("torch.utils.cpp_extension"), logging.getLogger("torch.utils._pytree")
    records = Records()
    for logger in (cpp, pytree):  # torch's loggers do not propagate to the root logger: listen on them
        logger.addHandler(records)
        monkeypatch.setattr(logger, "handlers", [*logger.handlers])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet.quiet_third_party():
            warnings.warn("The input of maxpool2d is not quantized, skip annotate maxpool2d with config x")
            warnings.warn("No complete tensor found in the group! Returning the first one.")
            warnings.warn("To copy construct from a tensor, it is recommended to use sourceTensor.detach()")
            warnings.warn("the user's own warning")
            cpp.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
            pytree.warning("%s is an Enum subclass and is now natively", "<enum 'KernelPreference'>")
            cpp.warning("another record")
        warnings.warn("The input of maxpool2d is not quantized (outside: the user's business)")
    assert [str(w.message) for w in seen] == ["the user's own warning",
                                              "The input of maxpool2d is not quantized (outside: the user's business)"]
    for logger in (cpp, pytree):
        logger.removeHandler(records)
    assert records.messages == ["another record"]
    assert not cpp.filters  # nothing left behind

    monkeypatch.setenv("RESNETS_DEBUG", "1")  # what --debug sets
    with warnings.catch_warnings(record=True) as seen, quiet.quiet_third_party():
        warnings.simplefilter("always")
        warnings.warn("The input of maxpool2d is not quantized")
    assert len(seen) == 1


def test_debug_flag_turns_the_filter_off_for_its_command_only(monkeypatch):
    from resnets.cli import models as models_cli

    monkeypatch.delenv("RESNETS_DEBUG", raising=False)
    during = []
    real = models_cli.run_list
    monkeypatch.setattr(models_cli, "run_list", lambda args: during.append(quiet.debug_enabled()) or real(args))
    main(["--debug", "list", "resnet18"])
    assert during == [True]
    assert not quiet.debug_enabled()  # main() called from Python leaves the environment as it was


@pytest.mark.slow  # int8 quantization and an inductor compile: 20-70 s on a shared 2-core machine
def test_int8_optimize_prints_no_third_party_warning():
    """The real thing: torchao's import and max-pool warning, inductor's int8 lowering, the CUDA_HOME line."""
    pytest.importorskip("torchao")
    code = """
import torch, resnets
model = resnets.create_model("resnet18").eval()
x = torch.randn(2, 3, 64, 64)
fast = resnets.optimize(model, "int8", example_inputs=x, calibration=[x])
fast(x)
print("ok")
"""
    out = run_python(code, RESNETS_DEBUG="0")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert out.stderr == ""


# --- progress -------------------------------------------------------------------------------------------


def test_eval_in_a_log_writes_lines_not_carriage_returns(tmp_path, monkeypatch, capsys):
    data = image_folder(tmp_path / "data", CIFAR[:2])
    argv = ["eval", str(data), "--model", "resnet20", "--weights", "none", "--workers", "0", "--batch-size", "1"]
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)  # a line for every batch
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].startswith("eval: 4/4 img (100%)")
    assert main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_bar_on_a_terminal_is_tqdm(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress.progress_bar(10, "x", True)
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress.progress_bar(10, "x", True), progress.LogLines)


# --- numbers and messages -------------------------------------------------------------------------------


def test_eval_refuses_unknown_class_folders_unless_by_position(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"\(apples, pears\) is one of the model's classes \(airplane, "):
        class_index(["apples", "pears"], "cifar10")
    assert class_index(["apples", "pears"], "cifar10", by_position=True) == [0, 1]
    assert class_index(["cat", "dog"], "cifar10") == [3, 5]  # names still match by name
    data = image_folder(tmp_path / "fruit", ("apples", "pears"), per_class=1)
    argv = ["eval", str(data), "--model", "resnet20", "--weights", "none", "--workers", "0", "--no-progress"]
    assert main(argv) == 1
    assert "pass --by-position" in capsys.readouterr().err
    assert main([*argv, "--by-position"]) == 0


def test_convert_an_alias_asks_for_the_model(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        main(["weights", "convert", "cifar10", str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--model" in err and "has no cifar10 weights" not in err
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    assert main(["weights", "convert", "cifar10", str(tmp_path / "out.safetensors"), "--model", "resnet20"]) == 1
    assert "resnet20.akamaster_cifar10" in capsys.readouterr().err  # the alias resolved for resnet20


def test_experiment_resumes_only_nets_with_a_checkpoint(tmp_path, monkeypatch):
    from resnets.train import experiment

    seen = []

    def fake_train(config):
        seen.append((config.model, config.resume))
        raise StopIteration

    monkeypatch.setattr(experiment, "train", fake_train)
    monkeypatch.setattr(experiment, "estimate_seconds", lambda config, images, evaluated: 0.0)
    monkeypatch.setattr(experiment, "_split_sizes", lambda config: (0, 0, 0))
    with pytest.raises(StopIteration):
        experiment.run_degradation("data", tmp_path, [20])
    (tmp_path / "plain20").mkdir()
    (tmp_path / "plain20" / "last.pt").write_bytes(b"")
    with pytest.raises(StopIteration):
        experiment.run_degradation("data", tmp_path, [20])
    assert seen == [("plain20", False), ("plain20", True)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_nan_message_suggests_fp32_only_to_other_precisions(tmp_path, precision):
    from test_cifar_data import write_fake_cifar

    from resnets.train import TrainingDiverged, make_config, train

    write_fake_cifar(tmp_path / "cifar", per_batch=8, n_test=8)
    model = resnets.create_model("resnet20")
    model.register_forward_hook(lambda m, a, out: out * float("nan"))
    config = make_config("fast-cifar", model="resnet20", data=str(tmp_path / "cifar"), out=str(tmp_path / "run"),
                         epochs=1, batch_size=8, precision=precision, threads=1, progress=False,
                         cache_dir=str(tmp_path / "cache"))
    with pytest.raises(TrainingDiverged) as e:
        train(config, model=model)
    assert ("precision='fp32'" in str(e.value)) == (precision != "fp32")


def test_download_failure_is_one_exception_with_the_manual_hint(tmp_path):
    import dataclasses

    from resnets.weights import get_weights
    from resnets.weights.download import DownloadError, download

    entry = dataclasses.replace(get_weights("resnet18.tv_in1k"), url="http://127.0.0.1:9/resnet18.pth")
    dest = tmp_path / "resnet18.pth"
    with pytest.raises(DownloadError) as e:
        download(entry, dest, progress=False, timeout=1, retries=0)
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert f"put it at {dest}" in str(e.value) and entry.url in str(e.value)


def test_gpu_check_without_a_gpu_is_a_usage_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    out = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "x.json")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "use --device cpu (with --quick" in out.stderr


# --- the Keras face -------------------------------------------------------------------------------------


def test_keras_constructors_default_to_imagenet_and_fail_clearly_offline(tmp_path, monkeypatch):
    for build in (resnets.ResNet18, resnets.ResNet50, resnets.ResNet152):
        assert inspect.signature(build).parameters["weights"].default == "imagenet"
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    from resnets.weights.download import OfflineError

    with pytest.raises(OfflineError, match=r"resnet50\.keras_in1k.*RESNETS_OFFLINE is set; download https://"):
        resnets.ResNet50()


def test_predict_takes_keras_arguments():
    model = resnets.ResNet18(weights=None, input_shape=(32, 32, 3)).eval()
    x = np.random.default_rng(0).normal(size=(5, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(model.predict(x), expected, atol=1e-5)
    with pytest.raises(TypeError, match="resnets predict PATH"):
        model.predict("a/folder")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.predict(x, batch_size=0)
    assert isinstance(model, torch.nn.Module)


def test_docstrings_say_what_they_do():
    keras_doc = inspect.getdoc(resnets.ResNet50)
    assert "resnet50.keras_in1k" in keras_doc and "74.9% top-1" in keras_doc
    for name in inspect.signature(resnets.ResNet50).parameters:
        assert f"{name}:" in keras_doc, name
    assert "compiles: it pays for every precision" in " ".join(inspect.getdoc(resnets.optimize).split())
    builder_doc = inspect.getdoc(resnets.resnet50)
    resnet_args = [p for p in inspect.signature(resnets.ResNet).parameters
                   if p not in ("self", "block", "layers", "widths", "stem", "residual")]
    block_args = [f.name for f in dataclasses.fields(resnets.BlockOptions) if f.name not in ("residual", "attn_ratio")]
    for name in ["weights", "progress", *resnet_args, *block_args]:
        assert f"``{name}``" in builder_doc, name
