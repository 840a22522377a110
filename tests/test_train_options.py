"""Training options checked before any work, and the evaluation split called what it is."""

from __future__ import annotations

import pytest
import torch

import resnets
from resnets.cli import main
from resnets.errors import BadInput, UnknownName
from resnets.train import data as run_data
from resnets.train import make_config, train
from resnets.train.distributed import DistContext
from test_cifar_data import write_image_tree

BAD = [
    (dict(augmentation="crop-flip"), UnknownName,
     "augmentation must be one of pad-crop, random-resized-crop, scale-crop, none, got 'crop-flip'"),
    (dict(schedule="cosin"), UnknownName, "schedule must be one of step, onecycle, cosine, triangular, got 'cosin'"),
    (dict(data_mode="ram"), UnknownName, "data_mode must be one of auto, memory, stream, got 'ram'"),
    (dict(normalize="imagenet"), UnknownName, "normalize must be one of channel, pixel, weights"),
    (dict(model="resnet21"), UnknownName, "unknown model 'resnet21'; did you mean"),
    (dict(device="gpu"), BadInput, "device= must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (dict(lr=-0.1), BadInput, r"lr= must be a number in \[0, inf\], got -0.1"),
    (dict(momentum=1.5), BadInput, r"momentum= must be a number in \[0, 1\], got 1.5"),
    (dict(label_smoothing=1.2), BadInput, r"label_smoothing= must be a number in \[0, 1\]"),
    (dict(eval_resize=0.5), BadInput, r"eval_resize= must be a number in \[1, inf\], got 0.5"),
    (dict(milestones=(0.5, 2.0)), BadInput, r"milestones= are fractions of the run, in \(0, 1\]"),
    (dict(test_subset=0), BadInput, "test_subset= must be a positive integer, got 0"),
    (dict(workers=-1), BadInput, "workers= must be an integer >= 0, got -1"),
    (dict(std=(0.0, 1.0, 1.0)), BadInput, r"std= must be 3 numbers \(R, G, B\), all positive"),
]


@pytest.mark.parametrize(("option", "error", "message"), BAD, ids=[next(iter(o)) for o, _, _ in BAD])
def test_a_bad_option_fails_before_any_data_is_read(tmp_path, monkeypatch, option, error, message):
    def no_reading(*args, **kwargs):
        raise AssertionError("data read before the options were checked")

    monkeypatch.setattr(run_data, "read_split", no_reading)
    with pytest.raises(error, match=message):
        resnets.train(data=str(tmp_path), out=str(tmp_path / "run"), progress=False, **option)


def test_cli_names_the_flag_of_a_bad_value(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--test-subset", "0", "--out", str(tmp_path / "run")]) == 1
    assert "--test-subset must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("folder", ["val", "test"])
def test_the_evaluation_split_is_named_after_its_folder(tmp_path, folder):
    write_image_tree(tmp_path, "train", 2)
    write_image_tree(tmp_path, folder, 1, seed=1)
    config = make_config("fast-cifar", model="resnet20", data=str(tmp_path), data_mode="stream", image_size=32)
    assert run_data.load_run_data(config, DistContext(0, 1, torch.device("cpu"))).eval_split == folder


def test_a_run_on_a_val_folder_logs_and_records_val(tmp_path, capsys):
    write_image_tree(tmp_path, "train", 4)
    write_image_tree(tmp_path, "val", 2, seed=1)
    result = train(model="resnet20", data=str(tmp_path), out=str(tmp_path / "run"), max_steps=1, batch_size=8,
                   precision="fp32", threads=1, progress=False, cache_dir=str(tmp_path / "cache"))
    assert result["eval_split"] == "val" and result["history"][0]["eval_split"] == "val"
    assert "val err" in capsys.readouterr().out
    entry = resnets.create_model(weights=tmp_path / "run" / "model.safetensors").pretrained_cfg
    assert entry.metrics_data.startswith(f"the val split of {tmp_path}")


def test_plot_of_a_missing_folder_says_it_does_not_exist(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 1
    assert f"run folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 1  # a folder without a run: what it lacks
    assert "no metrics.jsonl" in capsys.readouterr().err
