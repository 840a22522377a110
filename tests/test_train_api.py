"""resnets.train(...) as convenient as the CLI; flip test-time augmentation; the experiment's time estimate."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import resnets
from resnets.classes import CIFAR10_CLASSES
from resnets.cli import main
from resnets.evaluate import evaluate
from resnets.pipeline import load_inference
from resnets.preprocess import CIFAR10
from resnets.train import make_config
from resnets.train.experiment import estimate_seconds
from resnets.train.metrics import read_metrics
from test_cifar_data import write_fake_cifar

TEST_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "test.tar"
TIME_COLUMNS = ("epoch_time_s", "images_per_s", "wall_s")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, per_batch=52, n_test=64)
    return root


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows]


def test_python_api_trains_as_the_cli_does_and_returns_the_history(cifar, tmp_path):
    options = dict(model="resnet20", data=str(cifar), epochs=2, batch_size=64, lr=0.05, precision="fp32",
                   deterministic=True, threads=1, cache_dir=str(cifar / "cache"))
    result = resnets.train(out=str(tmp_path / "api"), progress=False, **options)
    argv = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v)) if v is not True]
    assert main(["train", *argv, "--deterministic", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0

    cli_rows = read_metrics(tmp_path / "cli")
    assert untimed(result["history"]) == untimed(cli_rows)  # same run, same numbers
    assert len(cli_rows) == 2 and result["eval_error"] == cli_rows[-1]["eval_error"]
    assert all(b["wall_s"] > a["wall_s"] > 0 for a, b in zip(cli_rows, cli_rows[1:]))

    # resume=True continues the saved config: the batch size is the run's, not the recipe's 128
    more = resnets.train(resume=True, out=str(tmp_path / "api"), epochs=3, progress=False)
    assert [r["epoch"] for r in more["history"]] == [1, 2, 3] and more["step"] == 3 * (260 // 64)
    with pytest.raises(TypeError, match="not both"):
        resnets.train(make_config(data=str(cifar)), epochs=1)
    with pytest.raises(ValueError, match="data"):
        resnets.train(model="resnet20")


def _first_test_jpegs(folder: Path, per_class: int) -> None:
    """The first ``per_class`` test JPEGs of each class from the shared tar, as an image folder."""
    with tarfile.open(TEST_TAR) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and int(Path(parts[2]).stem) < per_class:
                (folder / parts[1]).mkdir(parents=True, exist_ok=True)
                (folder / parts[1] / parts[2]).write_bytes(tar.extractfile(member).read())


@pytest.mark.skipif(not TEST_TAR.exists(), reason="shared CIFAR-10 data not present")
def test_flip_tta_averages_the_softmax_of_each_image_and_its_mirror(tmp_path, capsys):
    _first_test_jpegs(tmp_path, per_class=30)
    inf = load_inference("resnet20", "resnet20.cifar10", "fp32", device="cpu", progress=False)
    got = evaluate(inf, tmp_path, batch_size=64, workers=0, progress=False, tta="flip")

    # reference: PIL decode, torchvision's hflip, the model's logits by hand
    paths = sorted(p for p in tmp_path.rglob("*.jpg"))
    x = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(p.read_bytes())).convert("RGB"))).permute(2, 0, 1)
                     for p in paths])
    y = torch.tensor([CIFAR10_CLASSES.index(p.parent.name) for p in paths])
    x = CIFAR10.normalize(x)
    with torch.inference_mode():
        probs = (inf.model(x).softmax(1) + inf.model(TF.horizontal_flip(x)).softmax(1)) / 2
        plain = inf.model(x).argmax(1)
    assert got.images == len(paths) == 300
    assert got.top1 == pytest.approx(100 * (probs.argmax(1) == y).float().mean().item())
    assert (probs.argmax(1) != plain).any()  # the mirror images change some answers: TTA is not a no-op here

    assert main(["eval", "--weights", "resnet20.cifar10", str(tmp_path), "--tta", "flip", "--json",
                 "--workers", "0", "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["tta"] == "flip" and line["top1"] == pytest.approx(got.top1, abs=1e-3)
    with pytest.raises(ValueError, match="tta must be one of none, flip"):
        evaluate(inf, tmp_path, tta="rotate")


def test_time_estimate_is_close_to_the_measured_training_time(cifar, tmp_path):
    config = make_config(model="resnet20", data=str(cifar), out=str(tmp_path / "run"), epochs=3, batch_size=64,
                         precision="fp32", threads=2, progress=False, cache_dir=str(cifar / "cache"))
    estimate = estimate_seconds(config, 260)  # write_fake_cifar: 5 batches of 52
    result = resnets.train(config)
    measured = sum(r["epoch_time_s"] for r in result["history"][1:]) * 3 / 2  # epoch 1 pays one-off costs
    assert measured / 3 < estimate < measured * 3, (estimate, measured)


def test_time_estimate_scales_with_the_run_length(cifar, tmp_path, monkeypatch):
    """Twice the epochs, twice the estimate; max_steps counts steps (a clock that ticks one second per reading
    makes every step take the same time, so no other process can blur the comparison)."""
    from resnets.train import experiment

    ticks = iter(range(10**6))
    monkeypatch.setattr(experiment.time, "perf_counter", lambda: float(next(ticks)))
    config = make_config(model="resnet20", data=str(cifar), out=str(tmp_path / "run"), epochs=3, batch_size=64,
                         precision="fp32", progress=False)
    three = estimate_seconds(config, 260)
    assert estimate_seconds(make_config(**{**config.__dict__, "epochs": 6}), 260) == pytest.approx(2 * three)
    assert three == pytest.approx(3 * (260 // 64) * estimate_seconds(make_config(**{**config.__dict__,
                                                                                    "max_steps": 1}), 260))
