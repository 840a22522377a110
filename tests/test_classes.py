"""Class lists and decode_predictions against the shared TSV, torchvision's categories, Keras and hand-made top-k."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets import decode_predictions
from resnets.classes import CIFAR10_CLASSES, class_index, class_names, imagenet_classes, imagenet_names
from resnets.errors import BadInput

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
    assert decode_predictions([[0.3, 0.7]], top=1, classes=[("x1", "ex"), ("y2", "why")]) == [[("y2", "why", 0.7)]]
    assert decode_predictions(np.array([[0.45, 0.45, 0.1]]), classes=["a", "b", "c"])[0][0][0] == "0"  # ties: lower


def keras_decode(monkeypatch):
    """Keras' decode_predictions; it downloads its class index into a module global: given the same list offline."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    imagenet_utils = pytest.importorskip("keras.src.applications.imagenet_utils")
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", {str(i): list(row) for i, row in enumerate(imagenet_classes())})
    return imagenet_utils.decode_predictions


def test_decode_matches_keras(monkeypatch):
    preds = np.random.default_rng(0).dirichlet(np.ones(1000), size=4).astype(np.float32)
    expected = [[(wnid, name, float(p)) for wnid, name, p in row] for row in keras_decode(monkeypatch)(preds, 7)]
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


def test_decode_refuses_logits_that_keras_prints_as_scores(monkeypatch):
    """Issue 30: Keras' decode_predictions names a logit as if it were a probability; ours refuses logits
    (and rows that do not sum to 1) with BadInput saying what to do, and takes their softmax as Keras does."""
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    logits[1, 7] = 9.0
    keras = keras_decode(monkeypatch)
    assert keras(logits.numpy(), 1)[1][0][2] == pytest.approx(9.0)  # Keras prints a logit as a score
    with pytest.raises(BadInput, match=r"not probabilities: row 0 .*outside \[0, 1\].*softmax"):
        decode_predictions(logits)
    probs = torch.softmax(logits, 1)
    assert decode_predictions(probs, top=3) == [[(w, n, pytest.approx(float(p))) for w, n, p in row]
                                                for row in keras(probs.numpy(), 3)]
    assert decode_predictions(torch.softmax(logits.bfloat16(), 1), top=1)[1][0][:2] == imagenet_classes()[7]
    small = np.array([[0.2, 0.5, 0.1]])  # logits of a small head can all lie in [0, 1]: the sum tells
    with pytest.raises(BadInput, match="row 0 sums to 0.8, not 1.*multi_label=True"):
        decode_predictions(small, classes=["a", "b", "c"])
    with pytest.raises(BadInput, match="row 0 holds nan"):
        decode_predictions(np.array([[np.nan, 1.0]]), classes=["a", "b"])


def test_decode_takes_a_sigmoid_heads_scores_as_multi_label():
    scores = torch.sigmoid(torch.tensor([[2.0, -1.0, 0.5]]))
    with pytest.raises(BadInput, match="sums to"):
        decode_predictions(scores, classes=["a", "b", "c"])
    top = decode_predictions(scores, top=2, classes=["a", "b", "c"], multi_label=True)
    assert top == [[("0", "a", pytest.approx(float(scores[0, 0]))), ("2", "c", pytest.approx(float(scores[0, 2])))]]
    with pytest.raises(BadInput, match="outside"):
        decode_predictions(torch.tensor([[2.0, -1.0, 0.5]]), classes=["a", "b", "c"], multi_label=True)


def test_class_names_is_the_one_form_and_imagenet_names_keep_their_wnids():
    """A weights entry holds a tuple of names; the ImageNet and CIFAR-10 tuples decode and match as the
    shorthands do (wnids included)."""
    assert class_names("imagenet") == imagenet_names() == tuple(n for _, n in imagenet_classes())
    assert class_names("cifar10") == CIFAR10_CLASSES and class_names([("x1", "ex")]) == ("ex",)
    probs = np.eye(1000)[[340]]
    assert decode_predictions(probs, 1, imagenet_names()) == decode_predictions(probs, 1, "imagenet")
    assert decode_predictions(probs, 1, imagenet_names())[0][0][0] == "n02391049"
    assert class_index(imagenet_names(), "n02391049") == class_index("imagenet", "zebra") == 340
