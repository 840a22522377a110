"""Streaming image folders (same outputs as memory mode, torchvision's eval, exact resume, bad files); TensorBoard."""

from __future__ import annotations

import contextlib

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_train import Interrupt, fresh_model, interrupting_model, metrics
from test_train_distributed import torchrun
from torchvision import transforms as T

import resnets
from resnets.cli import main
from resnets.data.images import load_img
from resnets.data.source import read_split
from resnets.preprocess import CIFAR10
from resnets.train import make_config, streaming, train

CLASSES = ("blue", "red")


def write_folder(root, n_train: int = 20, n_test: int = 6) -> None:
    """``train|test/<class>/*.png`` of 48x40 noisy images, the red class brighter in the red channel."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 160, (40, 48, 3), dtype=np.uint8)
                pixels[..., 2 - 2 * c] += 90
                Image.fromarray(pixels).save(root / split / name / f"{i:03d}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_folder(root)
    return root


def two_class(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    model.reset_classifier(len(CLASSES))
    return model


def config(folder, out, recipe="fast-cifar", **kw):
    values = {"model": "resnet20", "data": str(folder), "out": str(out), "epochs": 2, "batch_size": 8, "lr": 0.05,
              "image_size": 32, "precision": "fp32", "deterministic": True, "threads": 1, "progress": False,
              "cache_dir": str(out.parent / "cache"), "data_mode": "stream", "workers": 0}
    return make_config(recipe, **{**values, **kw})


def torchvision_eval(weights, files) -> tuple[torch.Tensor, torch.Tensor]:
    """The saved model's logits on ``files`` through torchvision's Resize(32) + CenterCrop(32) (the fast-cifar
    recipe's evaluation), and the labels their class folders give: the reference for the trainer's logged evaluation."""
    model = resnets.create_model("resnet20", weights=weights).eval()
    prep = T.Compose([T.PILToTensor(), T.Resize(32, antialias=True), T.CenterCrop(32)])
    x = torch.stack([prep(load_img(f)) for f in files]).float() / 255
    x = (x - torch.tensor(CIFAR10.mean).view(3, 1, 1)) / torch.tensor(CIFAR10.std).view(3, 1, 1)
    with torch.no_grad():
        return model(x), torch.tensor([CLASSES.index(f.parent.name) for f in files])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["fast-cifar", "finetune"])
def test_a_recipe_trains_on_the_same_batches_cached_or_streamed(folder, tmp_path, recipe):
    """The recipe owns the transforms: the same decode geometry and augmentation in both storage modes,
    so a cached and a streamed run (2 workers) log the same losses (pad-crop and random-resized-crop)."""
    options = dict(epochs=1, lr=0.01, image_size=24)
    if recipe == "finetune":
        options["weights"] = "none"
    with pytest.warns(UserWarning) if recipe == "finetune" else contextlib.nullcontext():
        cached = config(folder, tmp_path / "memory", data_mode="memory", recipe=recipe, **options)
        streamed = config(folder, tmp_path / "stream", workers=2, recipe=recipe, **options)
    train(cached)
    train(streamed)
    a, b = metrics(tmp_path / "memory")[0], metrics(tmp_path / "stream")[0]
    for key in ("train_loss", "train_error", "eval_loss", "eval_error"):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key


def test_stream_writes_what_memory_writes_and_evaluates_like_torchvision(folder, tmp_path):
    memory = train(config(folder, tmp_path / "memory", data_mode="memory", epochs=1))
    stream = train(config(folder, tmp_path / "stream", workers=2))
    files = sorted(p.name for p in (tmp_path / "memory").iterdir())
    assert sorted(p.name for p in (tmp_path / "stream").iterdir()) == files and "metrics.csv" in files
    assert metrics(tmp_path / "memory")[0].keys() == metrics(tmp_path / "stream")[0].keys()
    assert (memory["step"], stream["step"], stream["skipped_images"]) == (5, 10, 0)

    logits, y = torchvision_eval(tmp_path / "stream" / "last.pt", sorted((folder / "test").glob("*/*.png")))
    last = metrics(tmp_path / "stream")[-1]
    # (torchvision's uint8 resize kernel may round a pixel the other way than this float one: 1/255 apart)
    assert last["eval_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-2)
    assert last["eval_error"] == pytest.approx((logits.argmax(1) != y).float().mean().item())


def scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_interrupted_and_resumed_stream_run_has_identical_metrics_and_tensorboard_log(folder, tmp_path):
    train(config(folder, tmp_path / "full"), model=two_class(fresh_model()))
    reference = metrics(tmp_path / "full")
    assert [r["epoch"] for r in reference] == [1, 2]

    run = tmp_path / "killed"  # killed at step 8 of 10 (epoch 2; last checkpoint: step 6), workers decoding
    logged = {"checkpoint_every_steps": 2, "tensorboard": True, "tensorboard_every_steps": 1}
    with pytest.raises(Interrupt):
        train(config(folder, run, workers=2, **logged), model=two_class(interrupting_model(7)))
    assert len(metrics(run)) == 1
    train(config(folder, run, resume=True, **logged))
    assert metrics(run) == reference

    # TensorBoard holds the metrics.csv values once each, the resumed run's replacing the interrupted one's
    for key in ("train_loss", "eval_error", "lr"):
        assert scalars(run, f"epoch/{key}") == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in reference]
    assert [step for step, _ in scalars(run, "train/step_loss")] == list(range(1, 11))  # step 7 once


def test_tensorboard_missing_is_a_clear_error(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'resnets\[tensorboard\]'"):
        train(config(folder, tmp_path, tensorboard=True))


def test_a_corrupt_image_is_skipped_and_reported(tmp_path, capsys):
    data = tmp_path / "data"
    write_folder(data, n_train=8, n_test=2)
    (data / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (data / "test" / "blue" / "truncated.png").write_bytes((data / "test" / "blue" / "000.png").read_bytes()[:60])
    result = train(config(data, tmp_path / "run", epochs=1, batch_size=17))
    assert result["skipped_images"] == 2 and result["epoch"] == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "truncated.png" in err


def test_an_epoch_of_only_unreadable_training_files_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    write_folder(data, n_train=1, n_test=1)
    for png in (data / "train").rglob("*.png"):
        png.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="epoch 1: no readable training image"):
        train(config(data, tmp_path / "run", epochs=1, batch_size=2))


def test_auto_mode_streams_only_large_data_sets(monkeypatch):
    assert streaming.choose_data_mode("auto", 40, 224) == "memory"  # 40 x 224^2 x 3 bytes: 6 MB
    monkeypatch.setattr(streaming, "AUTO_MEMORY_LIMIT", 40 * 32 * 32 * 3)
    assert streaming.choose_data_mode("auto", 40, 32) == "stream"
    assert streaming.choose_data_mode("auto", 40, 31) == "memory"
    assert streaming.choose_data_mode("stream", 1, 32) == "stream"
    with pytest.raises(ValueError, match="data_mode must be one of"):
        streaming.choose_data_mode("disk", 1, 32)


@pytest.mark.slow
def test_two_process_gloo_stream_run_matches_one_process(folder, tmp_path):
    # frozen BatchNorm statistics: then the 2 x 4 images of each step give exactly the gradient of the 8
    args = ["--data", str(folder), "--data-mode", "stream", "--workers", "1", "--image-size", "32", "--epochs", "1",
            "--batch-size", "8", "--lr", "0.0005", "--freeze", "bn", "--threads", "1", "--precision", "fp32",
            "--no-progress"]
    assert main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    proc = torchrun(["train", *args, "--out", str(tmp_path / "two")], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [5]
    for key in ("train_loss", "eval_loss", "eval_error"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-4), key


@pytest.mark.slow
def test_a_process_whose_share_of_a_batch_is_all_bad_files_skips_the_step_with_the_others(tmp_path):
    # 2 processes, global batch 8: rank 1 takes places 4-7 of each batch, and every other test image from 1 on
    data = tmp_path / "data"
    write_folder(data, n_train=8, n_test=4)
    train_files, test_files = read_split(data, "train"), read_split(data, "test")
    order = streaming.EpochBatches(len(train_files), 8, slice(4, 8))
    # --seed 0, epoch 0: the trainer's seed of the epoch is seed * 100003 + epoch
    order.set_epoch(streaming.epoch_order(len(train_files), 0), 0, 2)
    bad = [train_files.images[i] for i in next(iter(order))] + test_files.images[1::2]
    for path in bad:
        path.write_bytes(b"not an image")
    out = tmp_path / "run"
    proc = torchrun(["train", "--data", str(data), "--out", str(out), "--data-mode", "stream", "--workers", "0",
                     "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--seed", "0", "--threads", "1",
                     "--precision", "fp32", "--no-progress"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("step 1 of epoch 1 skipped: 1 of 2 processes have no readable image") == 1
    assert all(path.name in proc.stderr for path in bad)
    (row,) = metrics(out)
    assert row["step"] == 1  # step 2 trained on both processes

    # the logged evaluation is the model's on rank 0's readable images only: rank 1 added nothing, once
    logits, y = torchvision_eval(out / "last.pt", test_files.images[0::2])
    assert row["eval_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-2)
    assert row["eval_error"] == pytest.approx((logits.argmax(1) != y).float().mean().item())
