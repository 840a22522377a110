"""The degradation experiment's short preset: a test subset per epoch, evaluation in the estimate, and a verdict on
each half of the paper's finding."""

from __future__ import annotations

import pytest

import resnets
from resnets.cli import main
from resnets.train import experiment, make_config
from test_cifar_data import write_fake_cifar


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, per_batch=52, n_test=64)
    return root


def test_tiny_preset_evaluates_a_test_subset_and_says_the_resnet_half_needs_a_longer_run(cifar, tmp_path, capsys):
    assert main(["experiment", "degradation", "--preset", "tiny", "--depths", "20", "--epochs", "1",
                 "--train-subset", "256", "--test-subset", "32", "--precision", "fp32", "--out", str(tmp_path),
                 "--data", str(cifar), "--cache-dir", str(cifar / "cache"), "--threads", "1", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "of training and evaluation on cpu" in said
    # 1 epoch of 256 images in batches of 128 against quick's 7 epochs of the 260 (here) images
    assert "2 steps per net are too few to show the ResNet half" in said and "the quick preset's 14 showed it" in said
    entry = resnets.create_model(weights=tmp_path / "resnet20" / "model.safetensors").pretrained_cfg
    assert "(32 images)" in entry.metrics_data


def row(model: str, error: float) -> dict:
    kind, depth = model.rstrip("0123456789"), int(model.lstrip("plainresnet"))
    return {"model": model, "kind": kind, "depth": depth, "epoch": 4, "train_error": error}


def test_the_verdict_names_each_half_by_the_deepest_and_shallowest_nets():
    rows = [row("plain20", 0.30), row("plain32", 0.33), row("plain56", 0.45), row("resnet20", 0.27),
            row("resnet32", 0.27), row("resnet56", 0.28)]
    said = experiment.halves_shown(rows, 312)
    assert "plain-net half (the deeper plain net trains worse): shown (plain56 45.00% vs plain20 30.00%" in said
    assert ("ResNet half (the deeper ResNet trains better): not shown (resnet56 28.00% vs resnet20 27.00% training "
            "error); 312 steps per net are too few: train longer (--preset quick") in said
    rows[-1] = row("resnet56", 0.25)
    assert "ResNet half (the deeper ResNet trains better): shown" in experiment.halves_shown(rows, 2730)
    assert experiment.halves_shown(rows[:1] + rows[3:4], 10) == ""  # one depth: nothing to compare


def test_the_estimate_counts_an_evaluation_after_every_epoch(cifar, tmp_path, monkeypatch):
    """A clock that ticks one second per reading: each timed call takes 1/calls s, so the evaluation's share is
    exact: 3 epochs x ceil(64 / 32) batches x 1/2 s."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(experiment.time, "perf_counter", lambda: float(next(ticks)))
    config = make_config(model="resnet20", data=str(cifar), epochs=3, batch_size=16, eval_batch_size=32,
                         precision="fp32")
    assert experiment.estimate_seconds(config, 260, 64) - experiment.estimate_seconds(config, 260) \
        == pytest.approx(3 * 2 * 0.5)
