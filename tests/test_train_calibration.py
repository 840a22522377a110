"""Training's metrics rows carry the evaluation split's calibration (issue 33 item 3): ECE and the NLL, equal to
torchmetrics' and to the cross-entropy of the saved model's own outputs on that split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets.data.source import read_split
from resnets.pipeline import load_inference
from resnets.train.metrics import read_metrics
from test_cifar_data import write_fake_cifar


def test_each_epoch_records_the_ece_and_nll_of_the_saved_weights(tmp_path) -> None:
    torchmetrics = pytest.importorskip("torchmetrics")
    write_fake_cifar(tmp_path / "data", per_batch=40, n_test=64)
    run = tmp_path / "run"
    resnets.train(model="resnet20", data=str(tmp_path / "data"), epochs=1, batch_size=50, lr=0.05,
                  precision="fp32", deterministic=True, threads=1, out=str(run), progress=False,
                  cache_dir=str(tmp_path / "cache"))
    row = read_metrics(run)[-1]
    assert 0 < row["eval_ece"] < 1

    # The saved weights' logits on the same split are the reference.
    inf = load_inference(None, run / "model.safetensors")
    split = read_split(tmp_path / "data", "test")  # CIFAR batches: each image an array with load()
    x = torch.stack([inf.preprocessing(image.load()) for image in split.images])
    with torch.no_grad():
        logits = inf.model(x).float()
    labels = torch.as_tensor(split.labels)
    ece = torchmetrics.classification.MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")
    assert row["eval_ece"] == pytest.approx(float(ece(logits.softmax(1), labels)), abs=1e-6)
    assert row["eval_loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert row["eval_error"] == pytest.approx(float((logits.argmax(1) != labels).float().mean()), abs=1e-9)
