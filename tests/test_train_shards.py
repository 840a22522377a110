"""Training on a WebDataset shard folder (``resnets data shards``): a 2-process gloo run equals the 1-process run,
and a run killed mid-epoch resumes exactly, in one process or two."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resnets.data.shard_writer import write_shards
from resnets.train import make_config, train
from resnets.train.metrics import read_metrics
from test_train import Interrupt, interrupting_model
from test_train_distributed import torchrun

pytestmark = pytest.mark.slow  # several processes under torchrun


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory: pytest.TempPathFactory):
    """train (128 JPEGs, 10 classes: interrupting_model's resnet20) and val (40) written as shards of 10 images: the
    images live only in tars."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, count in (("train", 128), ("val", 40)):
        for i in range(count):
            label = i % 10
            pixels = rng.integers(0, 120, (36, 40, 3)) + np.array([15 * label, 90, 135 - 15 * label])
            path = root / split / f"class{label}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    out = tmp_path_factory.mktemp("shards")
    for split in ("train", "val"):
        write_shards(root, out, shard_size=10, split=split)
    assert not list(out.glob("*/"))  # no image folders: the trainer reads the tars
    return out


# BatchNorm statistics are per process under DDP, so frozen ("bn"): then 2 x 16 images give the 32's gradient
ARGS = dict(model="resnet20", epochs=2, batch_size=32, lr=0.002, precision="fp32", freeze="bn", threads=1,
            data_mode="stream", workers=1, seed=7)


def _flags(args: dict) -> list[str]:
    return [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def _same(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8]
    for x, y in zip(a, b):
        for key in ("train_loss", "eval_loss", "eval_error"):
            assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-6), (key, x, y)


def test_two_processes_over_shards_equal_one(shard_folder, tmp_path):
    train(make_config("fast-cifar", data=str(shard_folder), out=str(tmp_path / "one"), progress=False, **ARGS))
    proc = torchrun(["train", "--data", str(shard_folder), "--out", str(tmp_path / "two"), "--no-progress",
                     *_flags(ARGS)], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = read_metrics(tmp_path / "one")
    assert one[-1]["eval_split"] == "val"
    _same(one, read_metrics(tmp_path / "two"))


def test_killed_mid_epoch_over_shards_resumes_exactly(shard_folder, tmp_path):
    args = dict(data=str(shard_folder), progress=False, **ARGS)
    train(make_config("fast-cifar", out=str(tmp_path / "straight"), **args), model=interrupting_model(10**6))
    with pytest.raises(Interrupt):  # killed after 3 of the 8 steps (mid-epoch), a checkpoint every step
        train(make_config("fast-cifar", out=str(tmp_path / "one"), checkpoint_every_steps=1, **args),
              model=interrupting_model(after_steps=3))
    train(make_config("fast-cifar", out=str(tmp_path / "one"), resume=True, **args), model=interrupting_model(10**6))
    _same(read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "one"))
    with pytest.raises(Interrupt):  # and resumed by two processes
        train(make_config("fast-cifar", out=str(tmp_path / "moved"), checkpoint_every_steps=1, **args),
              model=interrupting_model(after_steps=3))
    proc = torchrun(["train", "--resume", "--out", str(tmp_path / "moved"), "--no-progress"], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same(read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "moved"))
