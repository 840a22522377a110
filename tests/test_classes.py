"""Class lists and decode_predictions against the shared TSV, torchvision's categories, Keras and hand-made top-k."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets import decode_predictions
from resnets.classes import CIFAR10_CLASSES, imagenet_classes

SHARED_TSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet_classes.tsv"


def test_imagenet_classes_match_the_shared_tsv():
    if not SHARED_TSV.exists():
        pytest.skip("shared ImageNet class list not available")
    rows = [tuple(line.split("\t")) for line in SHARED_TSV.read_text().splitlines()]
    assert imagenet_classes() == rows
    assert imagenet_classes()[0] == ("n01440764", "tench") and imagenet_classes()[999][1] == "toilet_tissue"


def test_imagenet_classes_in_torchvision_order():
    weights = pytest.importorskip("torchvision.models").ResNet50_Weights.IMAGENET1K_V1
    ours = [name.replace("_", " ").lower() for _, name in imagenet_classes()]
    theirs = [name.lower() for name in weights.meta["categories"]]
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    # torchvision renamed the two duplicate names: crane (bird, 134; machine is 517) and maillot (639; 638 stays)
    assert differ == [(134, "crane", "crane bird"), (639, "maillot", "maillot tank suit")]


def test_imagenet_classes_is_cached_and_safe_to_mutate():
    first = imagenet_classes()
    first.clear()
    assert len(imagenet_classes()) == 1000


def test_cifar10_classes():
    assert CIFAR10_CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_decode_hand_computed_top_k():
    preds = np.zeros((2, 1000), dtype=np.float32)
    preds[0, [1, 999, 0]] = [0.5, 0.3, 0.2]
    preds[1, [340, 17]] = [0.75, 0.25]
    assert decode_predictions(preds, top=3) == [
        [("n01443537", "goldfish", 0.5), ("n15075141", "toilet_tissue", pytest.approx(0.3)),
         ("n01440764", "tench", pytest.approx(0.2))],
        [("n02391049", "zebra", 0.75), ("n01580077", "jay", 0.25), ("n01440764", "tench", 0.0)],
    ]


def test_decode_cifar10_and_custom_lists_torch_input():
    logits = torch.tensor([[0.1, 2.0, -1.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]], requires_grad=True)
    top = decode_predictions(torch.softmax(logits, 1), top=2, classes="cifar10")
    probs = torch.softmax(logits, 1)[0].tolist()
    assert top == [[("3", "cat", pytest.approx(probs[3])), ("1", "automobile", pytest.approx(probs[1]))]]
    assert decode_predictions([[0.2, 0.7, 0.1]], top=5, classes=["a", "b", "c"]) == [
        [("1", "b", 0.7), ("0", "a", 0.2), ("2", "c", 0.1)]]
    assert decode_predictions([[0.2, 0.7]], top=1, classes=[("x1", "ex"), ("y2", "why")]) == [[("y2", "why", 0.7)]]
    assert decode_predictions(np.array([[0.5, 0.5, 0.1]]), classes=["a", "b", "c"])[0][0][0] == "0"  # ties: lower index


def test_decode_matches_keras(monkeypatch):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    imagenet_utils = pytest.importorskip("keras.src.applications.imagenet_utils")
    # Keras downloads its class index into this module global; give it the same list offline.
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", {str(i): list(row) for i, row in enumerate(imagenet_classes())})
    preds = np.random.default_rng(0).dirichlet(np.ones(1000), size=4).astype(np.float32)
    expected = [[(wnid, name, float(p)) for wnid, name, p in row] for row in imagenet_utils.decode_predictions(preds, 7)]
    assert decode_predictions(preds, top=7) == expected
    assert decode_predictions(torch.from_numpy(preds), top=7) == expected


def test_decode_errors_name_both_numbers():
    with pytest.raises(ValueError, match=r"10 classes .* ImageNet class list has 1000"):
        decode_predictions(np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"1000 classes .* CIFAR-10 class list has 10"):
        decode_predictions(np.zeros((1, 1000)), classes="cifar10")
    with pytest.raises(ValueError, match=r"\(N, C\).*\(1000,\)"):
        decode_predictions(np.zeros(1000))
    with pytest.raises(ValueError, match="unknown class list"):
        decode_predictions(np.zeros((1, 10)), classes="cifar100")
    with pytest.raises(ValueError, match="top"):
        decode_predictions(np.zeros((1, 10)), top=0, classes="cifar10")
