"""The trainer with the modern components on: exact resume with all of them, the same pixels cached or streamed,
the EMA weights evaluated and saved, torchvision's warm-up schedule, distillation end to end, the flags."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_cifar_data import write_fake_cifar
from test_train import Interrupt, interrupting_model, metrics
from test_train_streaming import write_folder

import resnets
from resnets.cli import main
from resnets.errors import MissingExtra, UnknownName
from resnets.train import make_config, train
from resnets.train.schedule import lr_at

EVERYTHING = dict(  # every component at once, sized for a few dozen 32-pixel images
    opt="lamb", lr=0.01, norm_weight_decay=0.0, bias_weight_decay=0.0, clip_grad_norm=1.0, lr_warmup_epochs=1,
    lr_warmup_method="linear", loss="bce", bce_target_thresh=0.2, mixup_alpha=0.2, cutmix_alpha=1.0,
    auto_augment="ta_wide", random_erase=0.5, ra_reps=2, model_ema=True, model_ema_steps=2, model_ema_decay=0.999,
    min_res=24, res_step=8, val_crop_size=32,
)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, per_batch=52, n_test=64)  # 260 training images: 4 steps of 64 (256 with ra_reps)
    return root


def tiny(cifar, out, **kw):
    values = dict(model="resnet20", data=str(cifar), out=str(out), epochs=2, batch_size=64, lr=0.05,
                  precision="fp32", deterministic=True, threads=1, progress=False, cache_dir=str(cifar / "cache"))
    return make_config("fast-cifar", **{**values, **kw})


@pytest.fixture(scope="module")
def teacher(cifar, tmp_path_factory):
    """A one-epoch ResNet-20 of the same data: a model file any run can be taught by."""
    out = tmp_path_factory.mktemp("teacher")
    train(tiny(cifar, out, epochs=1, train_subset=128))
    return out / "model.safetensors"


def fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnets.create_model("resnet20")


@pytest.mark.slow
def test_every_component_on_an_interrupted_run_resumes_bit_identically(cifar, teacher, tmp_path):
    options = dict(EVERYTHING, teacher=str(teacher), distill_alpha=0.3, distill_temperature=2.0)
    train(tiny(cifar, tmp_path / "full", **options), model=fresh())
    reference = metrics(tmp_path / "full")
    assert [r["epoch"] for r in reference] == [1, 2] and all("raw_eval_error" in r for r in reference)

    run = tmp_path / "killed"  # step 6 of 8 raises; the checkpoint of step 5 is the last
    with pytest.raises(Interrupt):
        train(tiny(cifar, run, checkpoint_every_steps=1, **options), model=interrupting_model(after_steps=5))
    assert len(metrics(run)) == 1
    train(tiny(cifar, run, checkpoint_every_steps=1, resume=True, **options))
    assert metrics(run) == reference
    full, resumed = (torch.load(d / "last.pt", weights_only=True) for d in (tmp_path / "full", run))
    for part in ("state_dict", "ema"):
        for name, value in full[part].items():
            torch.testing.assert_close(resumed[part][name], value, rtol=0, atol=0, msg=f"{part} {name}")
    assert torch.equal(full["aug_rng"], resumed["aug_rng"])


@pytest.mark.slow
def test_policies_erasing_mixing_and_repeats_see_the_same_pixels_cached_or_streamed(tmp_path):
    """Two data modes, one run: TrivialAugmentWide, random erasing, MixUp/CutMix and repeated augmentation (whose
    repeated indices a streamed batch must keep apart) give the same losses from memory and from the files."""
    data = tmp_path / "data"
    write_folder(data, n_train=130, n_test=4)  # 260 images: one epoch of 4 steps of 64 with ra_reps
    options = dict(model="resnet20", data=str(data), epochs=1, batch_size=64, lr=0.01, image_size=16,
                   precision="fp32", deterministic=True, threads=1, progress=False, auto_augment="ta_wide",
                   random_erase=0.5, mixup_alpha=0.2, cutmix_alpha=1.0, ra_reps=3, workers=0)
    runs = {}
    for mode in ("memory", "stream"):
        train(make_config("fast-cifar", out=str(tmp_path / mode), data_mode=mode,
                          cache_dir=str(tmp_path / "cache"), **options))
        runs[mode] = metrics(tmp_path / mode)[0]
    for key in ("train_loss", "train_error", "eval_loss", "eval_error"):
        assert runs["stream"][key] == pytest.approx(runs["memory"][key], rel=1e-5, abs=1e-7), key


def test_the_ema_weights_are_evaluated_and_saved_and_the_metrics_say_so(cifar, tmp_path):
    result = train(tiny(cifar, tmp_path, epochs=1, model_ema=True, model_ema_steps=1, model_ema_decay=0.99))
    row = metrics(tmp_path)[-1]
    assert row["eval_error"] == result["eval_error"] and "raw_eval_error" in row
    saved = resnets.create_model("resnet20", weights=tmp_path / "model.safetensors")
    trained = resnets.create_model("resnet20", weights=tmp_path / "last.pt")
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    for name, value in saved.state_dict().items():  # the file holds the average, the checkpoint both
        assert torch.equal(value, state["ema"][f"module.{name}"]), name
    assert not torch.equal(saved.conv1.weight, trained.conv1.weight)
    entry = saved.pretrained_cfg
    assert "moving average" in entry.training["weights"] and entry.metrics_data.endswith("the weights' moving average")
    # the average's logged error is what its file measures (the same fp32 evaluation)
    from resnets.data.tensors import load_image_tensors
    from resnets.preprocess import CIFAR10

    test = load_image_tensors(cifar, "test", cache_dir=cifar / "cache")
    with torch.no_grad():
        error = (saved.eval()(CIFAR10.normalize(test.images)).argmax(1) != test.labels).float().mean().item()
    assert error == pytest.approx(row["eval_error"], abs=1e-9)


@pytest.mark.parametrize("method", ["linear", "constant"])
def test_lr_warmup_epochs_are_torchvisions_sequential_lr(method):
    """At each epoch's first step: torchvision's SequentialLR of LinearLR/ConstantLR (lr_warmup_decay) and
    CosineAnnealingLR(T_max=epochs - warm-up), stepped per epoch."""
    epochs, warm, spe = 8, 3, 5
    cfg = make_config("fast-cifar", data="x", epochs=epochs, lr=0.4, schedule="cosine", warmup_fraction=0.0,
                      lr_warmup_epochs=warm, lr_warmup_method=method, lr_warmup_decay=0.1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.4)
    first = (torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm) if method == "linear"
             else torch.optim.lr_scheduler.ConstantLR(opt, factor=0.1, total_iters=warm))
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt, [first, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs - warm)], milestones=[warm])
    for epoch in range(epochs):
        for i in range(spe):  # constant within an epoch, as the reference's per-epoch stepping
            assert lr_at(epoch * spe + i, epochs * spe, cfg, steps_per_epoch=spe) == pytest.approx(
                opt.param_groups[0]["lr"] if i == 0 or epoch < warm else lr_at(epoch * spe + i, epochs * spe, cfg,
                                                                                 steps_per_epoch=spe), abs=1e-12)
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match="steps_per_epoch="):
        lr_at(0, 10, cfg)


def test_distillation_from_the_students_own_weights_has_no_soft_loss(cifar, teacher, tmp_path):
    """Taught by the very weights it starts from, with BatchNorm statistics frozen (the teacher's eval mode), the
    student's first step sees the teacher's logits as its own: the soft loss is 0; with the labels it is their loss."""
    common = dict(weights=str(teacher), teacher=str(teacher), freeze="bn", max_steps=1, epochs=None, lr=1e-8,
                  augment=False, label_smoothing=0.0)
    soft = train(tiny(cifar, tmp_path / "soft", distill_alpha=0.0, distill_temperature=3.0, **common))
    assert soft["train_loss"] == pytest.approx(0.0, abs=1e-4)  # the teacher's BatchNorm folded: 1e-6 apart
    hard = train(tiny(cifar, tmp_path / "hard", distill_alpha=1.0, **common))
    plain = train(tiny(cifar, tmp_path / "plain", **{k: v for k, v in common.items() if k != "teacher"}))
    assert hard["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5) and hard["train_loss"] > 0.1


def test_the_flags_reach_the_run_and_bad_values_name_them(cifar, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    main(["train", "--data", str(cifar), "--out", str(out), "--epochs", "1", "--batch-size", "64", "--threads", "1",
          "--precision", "fp32", "--cache-dir", str(cifar / "cache"), "--no-progress", "--recipe", "cifar-modern",
          "--opt", "adamw", "--lr", "0.001", "--mixup-alpha", "0.2", "--auto-augment", "ra", "--ra-magnitude", "5",
          "--no-model-ema", "--val-crop-size", "28", "--train-crop-size", "24", "--lr-warmup-epochs", "0"])
    saved = json.loads((out / "config.json").read_text())
    assert (saved["opt"], saved["mixup_alpha"], saved["auto_augment"], saved["ra_magnitude"], saved["model_ema"],
            saved["random_erase"], saved["norm_weight_decay"]) == ("adamw", 0.2, "ra", 5, False, 0.25, 0.0)
    entry = resnets.create_model("resnet20", weights=out / "model.safetensors").pretrained_cfg
    assert (entry.preprocessing.resize_size, entry.preprocessing.crop_size) == (28, 28)
    assert main(["train", "--data", str(cifar), "--out", str(tmp_path / "x"), "--random-erase", "1.5"]) == 1
    assert "error: --random-erase must be a number in [0, 1], got 1.5" in capsys.readouterr().err
    with pytest.raises(UnknownName, match=r"opt must be one of sgd, adamw, lamb, lars, got 'rmsprop'"):
        train(tiny(cifar, tmp_path / "y", opt="rmsprop"))
    monkeypatch.setitem(sys.modules, "timm", None)  # the train extra not installed: said before any work
    with pytest.raises(MissingExtra, match=r'opt=\'lars\' is timm\'s optimizer: pip install "resnets\[train\]"'):
        train(tiny(cifar, tmp_path / "z", opt="lars"))
