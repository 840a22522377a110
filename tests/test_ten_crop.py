"""The paper's 10-crop test (``resnets eval --ten-crop``): four corners, the centre and their mirror images of the
resized image, softmax averaged; checked against crops cut by hand."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from resnets.classes import CIFAR10_CLASSES
from resnets.cli import main
from resnets.evaluate import TenCrop, evaluate, predict_scores
from resnets.pipeline import load_inference
from resnets.preprocess import CIFAR10, Preprocessing

RECIPE = Preprocessing(CIFAR10.mean, CIFAR10.std, resize_size=40, crop_size=32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tencrop")
    rng = np.random.default_rng(0)
    for k, name in enumerate(CIFAR10_CLASSES):
        for i in range(2):
            (root / name).mkdir(exist_ok=True)
            base = np.kron(rng.integers(0, 255, (6, 5, 3)), np.ones((8, 9, 1)))  # blocky: not flip-symmetric
            Image.fromarray(base.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _by_hand(path, c=32):
    """Decode, resize the shorter side to 40, cut the five crops of it and of its mirror image by slicing (the order
    torchvision's TenCrop gives them in), normalise."""
    x = TF.resize(torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1), 40, antialias=True)
    h, w = x.shape[-2:]
    top, left = int(round((h - c) / 2)), int(round((w - c) / 2))
    crops = [t for y in (x, x.flip(-1)) for t in (y[:, :c, :c], y[:, :c, w - c:], y[:, h - c:, :c],
                                                   y[:, h - c:, w - c:], y[:, top:top + c, left:left + c])]
    mean, std = torch.tensor(CIFAR10.mean).view(3, 1, 1), torch.tensor(CIFAR10.std).view(3, 1, 1)
    return torch.stack([(t.float() / 255 - mean) / std for t in crops])


def test_ten_crop_equals_the_crops_cut_by_hand(folder):
    inf = dataclasses.replace(load_inference("resnet20", "resnet20.cifar10", "fp32", device="cpu", progress=False),
                              preprocessing=RECIPE)
    paths = sorted(folder.rglob("*.png"))
    ours = torch.stack([TenCrop(RECIPE)(Image.open(p)) for p in paths])
    hand = torch.stack([_by_hand(p) for p in paths])
    torch.testing.assert_close(ours, hand, atol=1e-5, rtol=0)
    with torch.inference_mode():
        probs = inf.model(hand.flatten(0, 1)).softmax(1).view(len(paths), 10, -1).mean(1)
    torch.testing.assert_close(predict_scores(inf, ours, "ten-crop"), probs, atol=1e-5, rtol=0)
    labels = torch.tensor([CIFAR10_CLASSES.index(p.parent.name) for p in paths])
    got = evaluate(inf, folder, batch_size=8, workers=0, progress=False, tta="ten-crop")
    assert got.images == 20
    assert got.top1 == pytest.approx(100 * (probs.argmax(1) == labels).float().mean().item())


@pytest.mark.slow
def test_the_cli_flag(folder, capsys):
    """With the weights' own recipe (resize = crop = 32) the five crops are the image: the same as flip TTA."""
    inf = load_inference("resnet20", "resnet20.cifar10", "fp32", device="cpu", progress=False)
    flip = evaluate(inf, folder, batch_size=8, workers=0, progress=False, tta="flip")
    assert main(["eval", "--weights", "resnet20.cifar10", str(folder), "--ten-crop", "--json", "--workers", "0",
                 "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["tta"] == "ten-crop" and line["top1"] == pytest.approx(flip.top1, abs=1e-3)
