"""The ImageNet recipes (issue 32): each hyperparameter held beside its source, so a recipe that drifts fails here;
every recipe trains two steps and resumes on a tiny ImageNet-layout folder; FFCV's schedule and ramp against its
own formulas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.train import make_config, train
from resnets.preprocess import IMAGENET_TORCH
from resnets.train.config import RECIPES, ffcv_ramp, scaled_lr
from resnets.train.metrics import read_metrics
from resnets.train.schedule import lr_at
from resnets.train.trainer import Trainer

TV = "https://github.com/pytorch/vision/tree/main/references/classification (README: ResNet; train.py defaults)"
TV2 = "https://github.com/pytorch/vision/issues/3995#new-recipe (the command in references/classification/README.md)"
PAPER = "He et al. 2015, https://arxiv.org/abs/1512.03385, section 3.4"
RSB = "Wightman, Touvron, Jegou 2021, https://arxiv.org/abs/2110.00476, Table 1"
TIMM = "timm train.py / optim param_groups_weight_decay (https://github.com/huggingface/pytorch-image-models)"
FFCV = "https://github.com/libffcv/ffcv-imagenet rn50_configs/rn50_88_epochs.yaml, train_imagenet.py"
FFCV_BATCH = "https://github.com/libffcv/ffcv-imagenet/issues/4 (batch 512 per GPU x 8 = 4096)"

# (recipe, TrainConfig field, the source's value, where it is written)
SOURCES = [
    ("paper-imagenet", "batch_size", 256, PAPER), ("paper-imagenet", "lr", 0.1, PAPER),
    ("paper-imagenet", "momentum", 0.9, PAPER), ("paper-imagenet", "weight_decay", 1e-4, PAPER),
    ("paper-imagenet", "schedule", "step", PAPER), ("paper-imagenet", "gamma", 0.1, PAPER),
    ("paper-imagenet", "epochs", 90, TV + ": /10 at 30 and 60 of 90"),
    ("paper-imagenet", "milestones", (1 / 3, 2 / 3), TV), ("paper-imagenet", "augmentation", "scale-crop", PAPER),
    ("tv-v1", "epochs", 90, TV), ("tv-v1", "batch_size", 256, TV + ": 8 GPUs x --batch-size 32"),
    ("tv-v1", "lr", 0.1, TV), ("tv-v1", "momentum", 0.9, TV), ("tv-v1", "weight_decay", 1e-4, TV),
    ("tv-v1", "schedule", "step", TV), ("tv-v1", "milestones", (1 / 3, 2 / 3), TV + ": --lr-step-size 30"),
    ("tv-v1", "gamma", 0.1, TV), ("tv-v1", "augmentation", "random-resized-crop", TV),
    ("tv-v1", "eval_resize", 256 / 224, TV + ": --val-resize-size 256 --val-crop-size 224"),
    ("tv-v1", "mean", IMAGENET_TORCH.mean, TV), ("tv-v1", "std", IMAGENET_TORCH.std, TV),
    ("tv-v2", "epochs", 600, TV2), ("tv-v2", "batch_size", 1024, TV2 + ": 8 GPUs x --batch-size 128"),
    ("tv-v2", "lr", 0.5, TV2), ("tv-v2", "schedule", "cosine", TV2 + ": --lr-scheduler cosineannealinglr"),
    ("tv-v2", "lr_warmup_epochs", 5, TV2), ("tv-v2", "lr_warmup_method", "linear", TV2),
    ("tv-v2", "lr_warmup_decay", 0.01, TV + ": train.py default"), ("tv-v2", "label_smoothing", 0.1, TV2),
    ("tv-v2", "mixup_alpha", 0.2, TV2), ("tv-v2", "cutmix_alpha", 1.0, TV2), ("tv-v2", "auto_augment", "ta_wide", TV2),
    ("tv-v2", "random_erase", 0.1, TV2), ("tv-v2", "model_ema", True, TV2),
    ("tv-v2", "model_ema_steps", 32, TV + ": train.py default"),
    ("tv-v2", "model_ema_decay", 0.99998, TV + ": train.py default"), ("tv-v2", "ra_reps", 4, TV2),
    ("tv-v2", "weight_decay", 2e-5, TV2), ("tv-v2", "norm_weight_decay", 0.0, TV2),
    ("tv-v2", "train_crop_size", 176, TV2), ("tv-v2", "val_resize_size", 232, TV2),
    ("tv-v2", "val_crop_size", 224, TV2), ("tv-v2", "momentum", 0.9, TV + ": train.py default"),
    *[(r, "opt", "lamb", RSB) for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "loss", "bce", RSB) for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "batch_size", 2048, RSB) for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "schedule", "cosine", RSB) for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "lr_warmup_epochs", 5, RSB) for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "auto_augment", "ra", RSB + ": RandAugment") for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "cutmix_alpha", 1.0, RSB) for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "val_crop_size", 224, RSB + ": test resolution 224") for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "val_resize_size", 235, RSB + ": crop ratio 0.95; timm floor(224 / 0.95)") for r in ("rsb-a1", "rsb-a2",
                                                                                                  "rsb-a3")],
    *[(r, "norm_weight_decay", 0.0, TIMM) for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    *[(r, "bias_weight_decay", 0.0, TIMM) for r in ("rsb-a1", "rsb-a2", "rsb-a3")],
    ("rsb-a1", "epochs", 600, RSB), ("rsb-a2", "epochs", 300, RSB), ("rsb-a3", "epochs", 100, RSB),
    ("rsb-a1", "lr", 5e-3, RSB), ("rsb-a2", "lr", 5e-3, RSB), ("rsb-a3", "lr", 8e-3, RSB),
    ("rsb-a1", "weight_decay", 0.01, RSB), ("rsb-a2", "weight_decay", 0.02, RSB), ("rsb-a3", "weight_decay", 0.02, RSB),
    ("rsb-a1", "train_crop_size", 224, RSB), ("rsb-a2", "train_crop_size", 224, RSB),
    ("rsb-a3", "train_crop_size", 160, RSB),
    ("rsb-a1", "ra_magnitude", 7, RSB + ": rand-m7-mstd0.5"), ("rsb-a2", "ra_magnitude", 7, RSB),
    ("rsb-a3", "ra_magnitude", 6, RSB + ": rand-m6-mstd0.5"),
    ("rsb-a1", "mixup_alpha", 0.2, RSB), ("rsb-a2", "mixup_alpha", 0.1, RSB), ("rsb-a3", "mixup_alpha", 0.1, RSB),
    ("rsb-a1", "model_kwargs", {"drop_path_rate": 0.05}, RSB + ": stochastic depth 0.05"),
    ("rsb-a2", "model_kwargs", {"drop_path_rate": 0.05}, RSB), ("rsb-a3", "model_kwargs", {}, RSB + ": none"),
    ("rsb-a1", "ra_reps", 3, RSB + ": repeated augmentation (DeiT's 3)"), ("rsb-a2", "ra_reps", 3, RSB),
    ("rsb-a3", "ra_reps", 0, RSB + ": none"),
    ("ffcv-rn50", "epochs", 88, FFCV), ("ffcv-rn50", "batch_size", 4096, FFCV_BATCH), ("ffcv-rn50", "lr", 1.7, FFCV),
    ("ffcv-rn50", "schedule", "triangular", FFCV + ": lr_schedule_type cyclic"),
    ("ffcv-rn50", "lr_peak_epoch", 2.0, FFCV + ": lr_peak_epoch default"), ("ffcv-rn50", "momentum", 0.9, FFCV),
    ("ffcv-rn50", "weight_decay", 1e-4, FFCV), ("ffcv-rn50", "norm_weight_decay", 0.0, FFCV + ": bn_wd 0"),
    ("ffcv-rn50", "label_smoothing", 0.1, FFCV), ("ffcv-rn50", "min_res", 160, FFCV),
    ("ffcv-rn50", "max_res", 192, FFCV), ("ffcv-rn50", "start_ramp", 65, FFCV), ("ffcv-rn50", "end_ramp", 76, FFCV),
    ("ffcv-rn50", "res_step", 32, FFCV + ": get_resolution rounds to 32"),
    ("ffcv-rn50", "val_crop_size", 256, FFCV + ": validation.resolution 256"),
    ("ffcv-rn50", "val_resize_size", 293, FFCV + ": DEFAULT_CROP_RATIO 224/256 of the shorter side, to 256"),
    ("ffcv-rn50", "model_kwargs", {"aa": "blur"}, FFCV + ": use_blurpool 1"),
]
IMAGENET_RECIPES = ("paper-imagenet", "tv-v1", "tv-v2", "rsb-a1", "rsb-a2", "rsb-a3", "ffcv-rn50")
# FFCV's six rn50 configs: epochs -> (start_ramp, end_ramp), as written in rn50_configs/rn50_<E>_epochs.yaml
FFCV_RAMPS = {16: (11, 13), 24: (17, 20), 32: (23, 27), 40: (29, 34), 56: (41, 48), 88: (65, 76)}


@pytest.mark.parametrize(("recipe", "field", "value", "source"), SOURCES,
                         ids=[f"{r}-{f}" for r, f, _, _ in SOURCES])
def test_recipe_equals_its_source(recipe: str, field: str, value: object, source: str) -> None:
    config = make_config(recipe, model="resnet50", data="DATA")
    got = getattr(config, field)
    assert got == pytest.approx(value) if isinstance(value, (float, tuple)) else got == value, \
        f"{recipe}.{field} is {got!r}, its source ({source}) says {value!r}"


def test_every_imagenet_recipe_has_sources() -> None:
    assert set(IMAGENET_RECIPES) <= set(RECIPES)
    assert {r for r, *_ in SOURCES} == set(IMAGENET_RECIPES)


@pytest.mark.parametrize(("epochs", "ramp"), sorted(FFCV_RAMPS.items()))
def test_ffcv_ramp_matches_its_configs(epochs: int, ramp: tuple[int, int]) -> None:
    assert ffcv_ramp(epochs) == ramp
    config = make_config("ffcv-rn50", model="resnet50", data="DATA", epochs=epochs)
    assert (config.start_ramp, config.end_ramp) == ramp


def test_ffcv_triangular_schedule_is_its_per_step_interpolation() -> None:
    """FFCV's train_loop: per epoch, np.interp(arange(iters), [0, iters], [get_lr(e), get_lr(e + 1)]) with
    get_lr(e) = np.interp([e], [0, lr_peak_epoch, epochs], [1e-4 * lr, lr, 0])."""
    config = make_config("ffcv-rn50", model="resnet50", data="DATA", epochs=16)
    iters, epochs, lr = 7, 16, config.lr

    def get_lr(e: int) -> float:
        return float(np.interp([e], [0, 2, epochs], [1e-4 * lr, lr, 0])[0])

    theirs = np.concatenate([np.interp(np.arange(iters), [0, iters], [get_lr(e), get_lr(e + 1)])
                             for e in range(epochs)])
    ours = [lr_at(s, epochs * iters, config, steps_per_epoch=iters) for s in range(epochs * iters)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_lr_follows_the_global_batch_as_each_source_says() -> None:
    for recipe in ("tv-v1", "tv-v2", "paper-imagenet", "ffcv-rn50"):  # SGD: linear (Goyal et al.)
        base = RECIPES[recipe]
        assert make_config(recipe, model="resnet50", data="D", batch_size=base["batch_size"] // 4).lr == \
            pytest.approx(base["lr"] / 4)
    # LAMB: timm's train.py lr_base_scale "sqrt" for adaptive optimizers
    assert make_config("rsb-a1", model="resnet50", data="D", batch_size=512).lr == pytest.approx(5e-3 / 2)
    assert make_config("rsb-a1", model="resnet50", data="D", batch_size=512, lr=0.1).lr == 0.1  # given: kept
    assert scaled_lr("fast-cifar", 512) == RECIPES["fast-cifar"]["lr"]  # the CIFAR recipes keep theirs


# --- two steps and a resume, on a tiny ImageNet-layout folder ---------------------------------------------------

WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/<wnid>/*.JPEG (256 images: repeated augmentation keeps multiples of 256) and val/<wnid>/*.JPEG."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 64), ("val", 4)):
        for c, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, (20, 24, 3)) + np.array([60 * c, 30, 200 - 50 * c])
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


# small sizes for every recipe: 2 steps of 128 per epoch over 256 images, 16-pixel crops, decoded once into memory
# (the recipes' own crop decoding streams: tests/test_train_crop_decode.py)
SMALL = dict(model="resnet18", batch_size=128, eval_batch_size=16, image_size=16, train_crop_size=16,
             val_crop_size=16, val_resize_size=18, precision="fp32", device="cpu", data_mode="memory",
             decode="resize", workers=0, progress=False, threads=2)


def _small(recipe: str, cache: Path) -> dict:
    # BlurPool's reflection padding needs the last stage at 2x2 or more: 32-pixel crops for FFCV's recipe
    extra = dict(min_res=32, max_res=32, res_step=32, image_size=32, train_crop_size=32, val_crop_size=32,
                 val_resize_size=36) if RECIPES[recipe].get("min_res") else {}
    return {**SMALL, **extra, "cache_dir": str(cache)}


class _Killed(Exception):
    pass


KEYS = ("step", "train_loss", "eval_loss", "eval_error", "lr")


def killed_and_resumed(config, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """``config`` run into ``out``, killed after its first epoch, then resumed: the resumed run's result."""
    end_epoch = Trainer._end_epoch

    def killed_after_first(self: Trainer, *args: object) -> dict:
        row = end_epoch(self, *args)
        if self.epoch == 1:
            raise _Killed
        return row

    monkeypatch.setattr(Trainer, "_end_epoch", killed_after_first)
    with pytest.raises(_Killed):
        train(dataclasses.replace(config, out=str(out)))
    monkeypatch.setattr(Trainer, "_end_epoch", end_epoch)
    return train(dataclasses.replace(config, out=str(out), resume=True))


def same_run(a: dict, b: dict) -> None:
    """Two runs' metrics (every epoch's, as written) and final weights are equal."""
    assert [{k: r[k] for k in KEYS} for r in read_metrics(b["run_dir"])] == \
        [{k: r[k] for k in KEYS} for r in read_metrics(a["run_dir"])]
    first = torch.load(Path(a["run_dir"]) / "last.pt", weights_only=True)["state_dict"]
    second = torch.load(Path(b["run_dir"]) / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", IMAGENET_RECIPES)
def test_recipe_trains_and_resumes_exactly(recipe: str, tiny_imagenet: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two epochs of two steps straight, and the same run killed after its first epoch and resumed: the same
    metrics and weights."""
    config = make_config(recipe, data=str(tiny_imagenet), epochs=2, out=str(tmp_path / "straight"),
                         **_small(recipe, tmp_path / "cache"))
    straight = train(config)
    assert [r["step"] for r in straight["history"]] == [2, 4]
    same_run(straight, killed_and_resumed(config, tmp_path / "resumed", monkeypatch))


def test_dry_run_prints_the_recipe_steps_and_estimate_and_writes_nothing(
        tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from resnets.cli import main
    from resnets.train.config import TrainConfig

    out = tmp_path / "run"
    assert main(["train", "--recipe", "tv-v2", "--model", "resnet18", "--data", str(tiny_imagenet), "--out", str(out),
                 "--batch-size", "64", "--epochs", "3", "--image-size", "16", "--train-crop-size", "16",
                 "--val-crop-size", "16", "--val-resize-size", "18", "--device", "cpu", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert f"\n  {f.name}: " in printed, f.name
    assert "  lr: 0.03125\n" in printed  # 0.5 x 64 / 1024
    assert "steps: 12 (4 per epoch" in printed  # RASampler: 256 // 256 * 256 images, batches of 64, 3 epochs
    assert "estimated: " in printed and " on cpu " in printed
    assert not out.exists()


# catalogue name -> the recipe that made it (torchvision's docs, timm's tags, the Keras V1 files' Caffe origin)
MADE_BY = {"resnet50.tv_in1k": "tv-v1", "resnet152.tv_in1k_v2": "tv-v2", "wide_resnet50_2.tv_in1k_v2": "tv-v2",
           "resnet50.a1_in1k": "rsb-a1", "resnet50.a2_in1k": "rsb-a2", "resnet50.a3_in1k": "rsb-a3",
           "resnet101.keras_in1k": "paper-imagenet", "resnet50v2.keras_in1k": None, "resnet50.a1h_in1k": None,
           "resnet20.cifar10": None}


@pytest.mark.parametrize(("name", "recipe"), sorted(MADE_BY.items()))
def test_weights_show_names_the_recipe_and_the_command(name: str, recipe: str | None,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from resnets.cli import main

    assert main(["weights", "show", name]) == 0
    printed = capsys.readouterr().out
    model = name.split(".")[0]
    command = f"torchrun --nproc-per-node 8 -m resnets train --model {model} --recipe {recipe} --data ~/imagenet"
    assert (command in printed) if recipe else ("retrain: no resnets recipe" in printed)
    assert recipe is None or recipe in RECIPES


def test_every_recipe_tag_names_a_recipe() -> None:
    from resnets.weights.hub import timm_catalogue
    from resnets.weights.registry import RECIPE_OF_TAG, WEIGHTS, training_recipe

    assert set(RECIPE_OF_TAG.values()) <= set(RECIPES)
    named = [e.name for e in [*WEIGHTS.values(), *timm_catalogue().values()] if training_recipe(e)]
    assert len([n for n in named if n.endswith(".tv_in1k")]) >= 10  # every torchvision V1 file
    assert {n for n in named if n.startswith("resnet50.")} >= {"resnet50.tv_in1k", "resnet50.tv_in1k_v2",
                                                               "resnet50.a1_in1k", "resnet50.a2_in1k",
                                                               "resnet50.a3_in1k", "resnet50.keras_in1k"}
