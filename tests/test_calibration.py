"""Calibration measures against torchmetrics and scikit-learn, the temperature against a grid search of the NLL,
and ``resnets calibrate``'s file: its temperature reaches every probability path, its logits stay raw."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.classification import MulticlassCalibrationError

import resnets
from resnets.calibration import brier, ece, fit_temperature, mce, nll, reliability
from resnets.classes import CIFAR10_CLASSES
from resnets.cli import main
from resnets.data.source import read_split
from resnets.keras_api import keras_resnet
from resnets.pipeline import load_inference
from resnets.predict import predict_files
from resnets.weights import WeightsEntry, read_checkpoint

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEST_TAR = SHARED / "data" / "cifar10-jpeg" / "test.tar"
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # resnet20.cifar10's recipe


def random_outputs(seed: int, n: int = 3000, classes: int = 10, scale: float = 4.0):
    """Over-confident logits: labels drawn from softmax(z) while the model reports softmax(scale * z)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g) * 1.5
    labels = torch.multinomial(z.softmax(1), 1, generator=g)[:, 0]
    return z * scale, labels


@pytest.mark.parametrize("seed, classes, scale", [(0, 10, 4.0), (1, 100, 2.0), (2, 3, 0.5)])
def test_ece_and_mce_equal_torchmetrics(seed, classes, scale):
    logits, labels = random_outputs(seed, classes=classes, scale=scale)
    probs = logits.softmax(1)
    for norm, ours in (("l1", ece), ("max", mce)):
        reference = MulticlassCalibrationError(num_classes=classes, n_bins=15, norm=norm)(probs, labels)
        assert ours(probs, labels) == pytest.approx(float(reference), abs=1e-6)


def test_nll_and_brier_equal_scikit_learn():
    logits, labels = random_outputs(3, classes=7)
    probs = logits.double().softmax(1)
    assert nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(7)), rel=1e-9)
    assert brier(probs, labels) == pytest.approx(brier_score_loss(labels, probs, labels=range(7)), rel=1e-9)


def test_bins_are_right_closed_and_a_certain_prediction_lands_in_the_last():
    probs = torch.tensor([[1.0, 0.0], [0.6, 0.4], [0.4, 0.6], [0.8, 0.2]], dtype=torch.float64)
    rel = reliability(probs, torch.tensor([0, 1, 1, 0]), n_bins=5)  # edges 0, .2, .4, .6, .8, 1
    assert rel.counts.tolist() == [0, 0, 2, 1, 1]  # 0.6 is in (0.4, 0.6], 0.8 in (0.6, 0.8], 1.0 in (0.8, 1]
    assert rel.accuracy.tolist() == [0, 0, 0.5, 1, 1]
    assert rel.ece == pytest.approx((2 * abs(0.5 - 0.6) + abs(1 - 0.8) + 0) / 4)
    assert rel.mce == pytest.approx(0.2)


def grid_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The NLL's minimiser on a grid of 1e-4 steps, refined around the coarse minimum."""
    def best(grid: torch.Tensor) -> float:
        z = logits.double()[None] / grid[:, None, None]
        losses = (z.logsumexp(2) - z.gather(2, labels.expand(len(grid), -1)[..., None])[..., 0]).mean(1)
        return float(grid[losses.argmin()])

    coarse = best(torch.linspace(0.05, 10, 2000, dtype=torch.float64))
    return best(torch.arange(coarse - 0.01, coarse + 0.01, 1e-4, dtype=torch.float64))


@pytest.mark.parametrize("seed, scale", [(4, 4.0), (5, 0.5)])
def test_fitted_temperature_equals_a_grid_search(seed, scale):
    logits, labels = random_outputs(seed, n=2000, scale=scale)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(grid_temperature(logits, labels), abs=1e-3)
    assert t == pytest.approx(scale, rel=0.15)  # the over-confidence the data was drawn with
    assert ece((logits / t).softmax(1), labels) < ece(logits.softmax(1), labels)


def test_a_split_the_model_never_gets_wrong_fits_no_temperature():
    logits = torch.eye(4) * 3
    with pytest.raises(ValueError, match="every held-out prediction is right"):
        fit_temperature(logits, torch.arange(4))


def test_the_entry_keeps_a_temperature_and_refuses_a_bad_one():
    entry = WeightsEntry("x", "resnet20", None, None, "safetensors", temperature=1.7, calibration={"ece_after": 0.01})
    assert WeightsEntry.from_json(entry.to_json()) == entry
    for bad in (0, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            WeightsEntry("x", "resnet20", None, None, "safetensors", temperature=bad)
    text = json.loads(entry.to_json()) | {"temperature": -2}
    with pytest.raises(ValueError, match="temperature"):
        WeightsEntry.from_json(json.dumps(text))


# --- resnets calibrate, end to end ------------------------------------------------------------------------


def cifar_jpegs(root: Path, splits: dict[str, int], classes: tuple[str, ...] = CIFAR10_CLASSES) -> Path:
    """Real CIFAR-10 test JPEGs as a data set under ``root``: ``splits[name]`` images of each class in
    ``root/name/<class>/``, the first ones of the tar in order."""
    if not TEST_TAR.exists():
        pytest.skip("shared CIFAR-10 data not present")
    wanted, taken = sum(splits.values()), dict.fromkeys(classes, 0)
    bounds = np.cumsum(list(splits.values()))
    with tarfile.open(TEST_TAR) as tar:
        for member in tar:
            cls = member.name.split("/")[-2] if member.isfile() else None
            if cls not in taken or taken[cls] >= wanted:
                continue
            split = list(splits)[int(np.searchsorted(bounds, taken[cls], side="right"))]
            taken[cls] += 1
            dest = root / split / cls / Path(member.name).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
            if min(taken.values()) >= wanted:
                break
    return root


@pytest.fixture(scope="module")
def cifar_splits(tmp_path_factory) -> Path:
    """train/ (8 per class) and test/ (4 per class)."""
    return cifar_jpegs(tmp_path_factory.mktemp("cifar"), {"train": 8, "test": 4})


def reference_logits(paths, model: torch.nn.Module) -> torch.Tensor:
    """The recipe by hand: RGB in [0, 1], ImageNet mean and std, no resize (32x32 images)."""
    x = np.stack([(np.asarray(Image.open(p).convert("RGB"), np.float64) / 255 - MEAN) / STD for p in paths])
    with torch.no_grad():
        return model(torch.from_numpy(x).permute(0, 3, 1, 2).float())


@pytest.mark.slow  # about 5 s
def test_calibrate_writes_the_fitted_temperature_and_every_probability_path_applies_it(cifar_splits, tmp_path,
                                                                                         capsys):
    out = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", "--weights", "resnet20.cifar10", "--data", str(cifar_splits), "--val-split", "50",
                 "-o", str(out), "--workers", "0", "--no-progress", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    held, _ = read_split(cifar_splits, "train").held_out(50, seed=0)
    original = resnets.resnet20(weights="resnet20.cifar10").eval()
    logits = reference_logits(held.images, original)
    labels = held.labels  # the data's classes are CIFAR-10's, in the model's order
    t = grid_temperature(logits, labels)
    entry = read_checkpoint(out).entry
    assert abs(entry.temperature - 1) > 0.1  # far enough from 1 for the checks below to tell
    assert entry.temperature == printed["temperature"] == pytest.approx(t, abs=1e-3)
    assert printed["images"] == entry.calibration["images"] == 50
    for when, temperature in (("before", 1.0), ("after", entry.temperature)):
        probs = (logits.double() / temperature).softmax(1)
        reference = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(probs, labels)
        assert entry.calibration[f"ece_{when}"] == pytest.approx(float(reference), abs=1e-6)
        assert entry.calibration[f"nll_{when}"] == pytest.approx(log_loss(labels, probs, labels=range(10)), abs=1e-5)

    # the reloaded file: raw logits, calibrated probabilities, on every path
    photos = sorted((cifar_splits / "test").rglob("*.jpg"))[:8]
    expected_logits = reference_logits(photos, original)
    expected = (expected_logits / entry.temperature).softmax(1)
    reloaded = resnets.create_model(weights=out).eval()
    assert reloaded.temperature == entry.temperature
    assert torch.allclose(reference_logits(photos, reloaded), expected_logits, atol=1e-5)  # model(x): raw
    inf = load_inference(None, out)
    got = [dict((name, p) for _, name, p in pred.top) for pred in predict_files(inf, photos, top=10, workers=0)]
    assert torch.tensor([[row[n] for n in CIFAR10_CLASSES] for row in got]) == pytest.approx(expected, abs=1e-5)
    keras_style = keras_resnet("resnet20", weights=out, classes=10).eval()  # ends in its own softmax
    x = np.stack([(np.asarray(Image.open(p).convert("RGB")) / 255 - MEAN) / STD for p in photos]).astype(np.float32)
    assert torch.from_numpy(keras_style.predict(x, verbose=0)) == pytest.approx(expected, abs=1e-5)
    shown = resnets.explain(reloaded, torch.from_numpy(x).permute(0, 3, 1, 2), method="cam").probabilities
    assert shown == pytest.approx(expected.max(1).values.float(), abs=1e-5)  # the explained class's probability

