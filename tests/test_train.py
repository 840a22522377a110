"""The trainer: recipes, exact resume, NaN stop, loadable checkpoints, fine-tuning, plots, CLI."""

from __future__ import annotations

import json

import pytest
import torch

import resnets
from resnets.cli import main
from resnets.preprocess import CIFAR10
from resnets.train import TrainConfig, TrainingDiverged, make_config, train
from resnets.train.schedule import lr_at
from test_cifar_data import write_fake_cifar

TIME_COLUMNS = ("epoch_time_s", "images_per_s", "wall_s")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, per_batch=52, n_test=64)  # 260 training images: 4 steps of 64 per epoch
    return root


def tiny_config(cifar, out, recipe: str = "fast-cifar", **kw) -> TrainConfig:
    values = dict(model="resnet20", data=str(cifar), out=str(out), epochs=2, batch_size=64, lr=0.05,
                  precision="fp32", deterministic=True, threads=1, progress=False, cache_dir=str(cifar / "cache"))
    return make_config(recipe, **{**values, **kw})


class Interrupt(Exception):
    pass


def interrupting_model(after_steps: int, nan: bool = False) -> torch.nn.Module:
    """resnet20 whose training forward pass raises (or returns NaN) from its ``after_steps``-th call on."""
    torch.manual_seed(0)
    model = resnets.create_model("resnet20")
    calls = []

    def hook(module, args, output):
        if module.training:
            calls.append(1)
            if len(calls) > after_steps:
                if nan:
                    return output * float("nan")
                raise Interrupt
        return output

    model.register_forward_hook(hook)
    return model


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnets.create_model("resnet20")


def metrics(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows]


def test_paper_recipe_is_section_4_2():
    cfg = make_config("paper-cifar", model="resnet56", data="x")
    assert (cfg.batch_size, cfg.momentum, cfg.weight_decay, cfg.max_steps) == (128, 0.9, 1e-4, 64_000)
    assert cfg.normalize == "pixel" and cfg.warmup_lr is None
    lrs = [lr_at(s, cfg.max_steps, cfg) for s in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    deep = make_config("paper-cifar", model="resnet110", data="x")
    assert lr_at(0, 64_000, deep, warming_up=True) == 0.01 and lr_at(0, 64_000, deep) == 0.1


@pytest.mark.slow
def test_interrupted_and_resumed_run_has_identical_metrics(cifar, tmp_path):
    train(tiny_config(cifar, tmp_path / "full"), model=fresh_model())
    reference = metrics(tmp_path / "full")
    assert [r["epoch"] for r in reference] == [1, 2]

    # killed in the middle of epoch 2 (step 6 of 8), with a checkpoint every step
    run = tmp_path / "killed"
    with pytest.raises(Interrupt):
        train(tiny_config(cifar, run, checkpoint_every_steps=1), model=interrupting_model(after_steps=5))
    assert len(metrics(run)) == 1
    train(tiny_config(cifar, run, checkpoint_every_steps=1, resume=True))
    assert metrics(run) == reference

    a = resnets.create_model("resnet20", weights=tmp_path / "full" / "last.pt")
    b = resnets.create_model("resnet20", weights=run / "model.safetensors")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cifar, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint is .*last\.pt \(epoch 1\)"):
        train(tiny_config(cifar, tmp_path, epochs=3), model=interrupting_model(after_steps=6, nan=True))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert len(metrics(tmp_path)) == 1


def test_checkpoints_load_with_create_model_and_reproduce_the_logged_error(cifar, tmp_path):
    # bf16 where the CPU has it (emulated bf16 trains several times slower: fp32 there, as the recipes do)
    result = train(tiny_config(cifar, tmp_path, epochs=1, precision="auto"))
    bf16 = TrainConfig.load(tmp_path / "config.json").precision == "bf16"
    from resnets.data.tensors import load_image_tensors

    test = load_image_tensors(cifar, "test", cache_dir=cifar / "cache")
    model = resnets.create_model("resnet20", weights=tmp_path / "best.pt").eval()
    mean, std = torch.tensor(CIFAR10.mean), torch.tensor(CIFAR10.std)
    x = (test.images.float() / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        error = (model(x).argmax(1) != test.labels).float().mean().item()
    assert error == pytest.approx(result["eval_error"], abs=1 / 64)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "curves.png").stat().st_size > 1000


def test_finetune_frozen_backbone_changes_only_the_new_head(cifar, tmp_path):
    pretrained = tmp_path / "pre.safetensors"
    from safetensors.torch import save_file

    base = fresh_model()
    base.reset_classifier(7)  # a different class count than the data's 10
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(pretrained))
    train(tiny_config(cifar, tmp_path / "ft", recipe="finetune", weights=str(pretrained), freeze="backbone",
                      model_kwargs={"num_classes": 7}, epochs=1))
    tuned = resnets.create_model("resnet20", weights=tmp_path / "ft" / "last.pt")
    assert tuned.fc.out_features == 10
    for name, value in base.state_dict().items():
        if not name.startswith("fc."):  # weights and BN statistics untouched
            torch.testing.assert_close(tuned.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_cli_train_plot_and_degradation_experiment(cifar, tmp_path, capsys):
    common = ["--data", str(cifar), "--cache-dir", str(cifar / "cache"), "--threads", "1", "--no-progress"]
    assert main(["train", "--model", "resnet20", "--epochs", "1", "--batch-size", "64", "--precision", "fp32",
                 "--out", str(tmp_path / "run"), *common]) == 0
    saved = TrainConfig.load(tmp_path / "run" / "config.json")
    assert (saved.recipe, saved.batch_size, saved.label_smoothing) == ("fast-cifar", 64, 0.1)
    (tmp_path / "run" / "curves.png").unlink()
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "curves.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path / "none")])  # no --data, nothing to resume
    assert exit_info.value.code == 2

    assert main(["experiment", "degradation", "--depths", "20", "--epochs", "1", "--train-subset", "128",
                 "--out", str(tmp_path / "deg"), *common]) == 0
    rows = (tmp_path / "deg" / "degradation.csv").read_text().splitlines()
    assert rows[0].startswith("model,kind,depth,epoch") and len(rows) == 3
    assert {r.split(",")[0] for r in rows[1:]} == {"plain20", "resnet20"}
    assert (tmp_path / "deg" / "degradation.png").stat().st_size > 1000
    # The quick preset's recipe (fast-cifar) trains in bf16 only where the CPU computes it natively.
    from resnets.cpu import cpu_info

    ran = TrainConfig.load(tmp_path / "deg" / "resnet20" / "config.json").precision
    assert ran == ("bf16" if cpu_info().native_bf16 else "fp32")


def test_auto_precision_is_bf16_only_where_the_device_computes_it(monkeypatch):
    from resnets import cpu
    from resnets.train import precision

    assert make_config("fast-cifar", model="resnet20", data="d").precision == "auto"
    assert make_config("paper-cifar", model="resnet20", data="d").precision == "fp32"
    for flags, expected in (("avx2", "fp32"), ("avx2 avx512f avx512_bf16", "bf16"), ("avx2 amx_bf16 amx_int8", "bf16")):
        monkeypatch.setattr(precision, "cpu_info", lambda flags=flags: cpu.CpuInfo("x", frozenset(flags.split())))
        assert precision.resolve_precision("auto", torch.device("cpu")) == expected, flags
        assert precision.resolve_precision("fp32", torch.device("cpu")) == "fp32"
        assert precision.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for by name: as asked


def test_finetune_takes_the_network_and_the_input_normalisation_of_its_weights(cifar, tmp_path):
    """No --model: the network the weights are for; the finetune recipe's normalisation: the weights' own (here
    Caffe-style BGR 0..255 with means, which the CIFAR default mean/std would get badly wrong)."""
    from resnets.preprocess import Preprocessing
    from resnets.weights.entry import WeightsEntry, save_safetensors

    caffe = Preprocessing((103.9, 116.8, 123.7), (1.0, 1.0, 1.0), scale=1.0, channel_order="BGR", resize_size=36,
                          crop_size=32)
    torch.manual_seed(0)
    file = tmp_path / "mine.safetensors"
    save_safetensors(resnets.create_model("resnet32").state_dict(), file,
                     WeightsEntry("mine", "resnet32", None, None, "safetensors", preprocessing=caffe, classes="cifar10"))
    result = train(recipe="finetune", data=str(cifar), weights=str(file), out=str(tmp_path / "run"), max_steps=1,
                   batch_size=64, precision="fp32", threads=1, progress=False, cache_dir=str(cifar / "cache"))
    assert result["step"] == 1
    tuned = resnets.create_model(weights=tmp_path / "run" / "model.safetensors").pretrained_cfg
    assert tuned.model == "resnet32"
    p = tuned.preprocessing
    assert (p.mean, p.std, p.scale, p.channel_order) == (caffe.mean, caffe.std, 1.0, "BGR")
    assert TrainConfig.load(tmp_path / "run" / "config.json").normalize == "weights"
