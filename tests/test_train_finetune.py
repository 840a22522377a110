"""Fine-tuning done right: the weights' own input geometry, a frozen backbone that keeps its BatchNorm statistics,
linear probe then fine-tune, and a slower backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.transforms import v2

import resnets
from resnets.train import make_config, train
from resnets.train import trainer as trainer_module
from resnets.train.checkpoint import model_state
from resnets.train.config import for_weights
from resnets.weights import get_weights
from test_cifar_data import write_fake_cifar


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    # 130 training images (2 steps of 64) named as CIFAR-10's classes, so resnet20.cifar10 keeps its classifier
    return root, write_fake_cifar(root, per_batch=26, n_test=64, classes=get_weights("resnet20.cifar10").classes)


def finetune(root, out, **kw):
    values = dict(data=str(root), out=str(out), batch_size=64, precision="fp32", threads=1, progress=False,
                  cache_dir=str(Path(root) / "cache"))
    return make_config("finetune", **{**values, **kw})


def test_the_finetune_recipe_takes_the_geometry_the_weights_were_trained_with():
    """torchvision's own transforms of its V2 weights (resize 232, crop 224) for an ImageNet net; 32 pixels as they
    are, with pad-and-crop, for a CIFAR net (not ImageNet's resize 37, crop 32); an option given wins."""
    tv = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    imagenet = for_weights(finetune("d", "o", weights="resnet50.tv_in1k_v2"), get_weights("resnet50.tv_in1k_v2"))
    assert imagenet.model == "resnet50" and imagenet.augmentation == "random-resized-crop"
    assert (round(imagenet.image_size * imagenet.eval_resize), imagenet.image_size) == (*tv.resize_size, *tv.crop_size)
    cifar = for_weights(finetune("d", "o", weights="resnet20.cifar10"), get_weights("resnet20.cifar10"))
    assert (cifar.image_size, cifar.eval_resize, cifar.augmentation) == (32, 1.0, "pad-crop")
    mine = for_weights(finetune("d", "o", weights="resnet20.cifar10", augmentation="random-resized-crop",
                                eval_resize=1.25), get_weights("resnet20.cifar10"))
    assert (mine.image_size, mine.eval_resize, mine.augmentation) == (32, 1.25, "random-resized-crop")


def test_a_frozen_untrained_finetune_evaluates_exactly_as_the_weights_did(cifar, tmp_path, capsys):
    """lr 0 and a frozen backbone leave resnet20.cifar10 as it was: the run's evaluation then equals torchvision's
    pipeline for the weights (the 32-pixel images as they are, normalised); ImageNet-style resizing would not."""
    root, written = cifar
    result = train(finetune(root, tmp_path, weights="resnet20.cifar10", freeze="backbone", lr=0.0, max_steps=1))
    said = capsys.readouterr().out
    assert "freeze='backbone': only the classifier trains; the backbone's weights and its BatchNorm statistics" in said
    model = resnets.create_model(weights="resnet20.cifar10").eval()
    entry = model.pretrained_cfg.preprocessing
    pipeline = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(entry.mean, entry.std)])
    with torch.no_grad():
        logits = model(pipeline(torch.from_numpy(written["test_x"])))
    expected = F.cross_entropy(logits, torch.from_numpy(written["test_y"]).long()).item()
    assert result["eval_loss"] == pytest.approx(expected, rel=1e-5)
    saved = resnets.create_model(weights=tmp_path / "model.safetensors").pretrained_cfg.preprocessing
    assert (saved.resize_size, saved.crop_size) == (entry.resize_size, entry.crop_size) == (32, 32)


def epoch_states(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The model's weights and BatchNorm statistics at the end of each epoch."""
    states: list[dict[str, torch.Tensor]] = []
    end_epoch = trainer_module.Trainer._end_epoch

    def recording(self, *args, **kwargs):
        states.append({k: v.clone() for k, v in model_state(self.model).items()})
        return end_epoch(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "_end_epoch", recording)
    return states


def pretrained_file(tmp_path, classes: int = 7):
    torch.manual_seed(0)
    model = resnets.create_model("resnet20", num_classes=classes)
    model.train()
    with torch.no_grad():  # BatchNorm statistics of their own, unlike a fresh net's 0 and 1
        model(torch.randn(64, 3, 32, 32) * 2 + 1)
    path = tmp_path / "pre.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_linear_probe_then_fine_tune(cifar, tmp_path, monkeypatch, capsys):
    root, _ = cifar
    path, before = pretrained_file(tmp_path)
    states = epoch_states(monkeypatch)
    train(finetune(root, tmp_path / "run", weights=str(path), model_kwargs={"num_classes": 7}, epochs=2,
                   lp_epochs=1, lr=0.05))
    assert "linear probe for the first 1 epoch (the classifier alone" in capsys.readouterr().out
    probe, tuned = states
    backbone = [k for k in before if not k.startswith("fc.")]
    for k in backbone:  # the probe: weights and BatchNorm statistics (running mean, var, count) as loaded
        assert torch.equal(probe[k], before[k]), k
    assert probe["fc.weight"].shape == (10, 64) and not torch.equal(probe["fc.weight"], tuned["fc.weight"])
    moved = [k for k in backbone if not torch.equal(tuned[k], before[k])]
    assert "layer1.0.conv1.weight" in moved and "layer1.0.bn1.running_mean" in moved  # then every layer trains


def test_the_backbone_learns_at_a_share_of_the_heads_learning_rate(cifar, tmp_path, monkeypatch):
    root, _ = cifar
    path, _ = pretrained_file(tmp_path, classes=10)
    seen: list[list[tuple[float, int]]] = []
    step = torch.optim.SGD.step

    def recording(self, *args, **kwargs):
        seen.append([(g["lr"], len(g["params"])) for g in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    train(finetune(root, tmp_path / "run", weights=str(path), max_steps=1, lr=0.05, backbone_lr_scale=0.1))
    head = len(list(resnets.create_model("resnet20").fc.parameters()))
    everything = len(list(resnets.create_model("resnet20").parameters()))
    (backbone_lr, backbone), (head_lr, heads) = sorted(seen[0])
    assert (head_lr, heads, backbone) == (0.05, head, everything - head) and backbone_lr == pytest.approx(0.005)


@pytest.mark.parametrize(("options", "message"), [
    (dict(lp_epochs=1), "lp_epochs= trains the classifier alone first, on top of pretrained weights: give weights="),
    (dict(lp_epochs=5, epochs=5, weights="resnet20.cifar10"), "lp_epochs=5 leaves none of the 5 epochs to fine-tune"),
    (dict(lp_epochs=1, freeze="backbone", weights="resnet20.cifar10"), "lp_epochs= is a linear probe followed by"),
    (dict(backbone_lr_scale=0.0, weights="resnet20.cifar10"), "backbone_lr_scale=0 would train the classifier"),
    (dict(backbone_lr_scale=2.0, weights="resnet20.cifar10"), r"backbone_lr_scale= must be a number in \[0, 1\]"),
])
def test_fine_tuning_options_are_checked_first(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        train(finetune(tmp_path / "nowhere", tmp_path / "run", **options))


def test_weights_for_other_classes_of_the_same_count_get_a_fresh_classifier(cifar, tmp_path):
    """resnet20.cifar10 onto ten classes of other names: its classifier would score them as CIFAR-10's, so a fresh
    one replaces it (said); onto CIFAR-10's own classes it stays."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "other"
    rng = np.random.default_rng(0)
    for split, n in (("train", 7), ("test", 2)):
        for c in range(10):
            (folder / split / f"kind{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    folder / split / f"kind{c}" / f"{i}.png")
    pretrained = resnets.create_model(weights="resnet20.cifar10").state_dict()
    with pytest.warns(UserWarning, match=r"resnet20.cifar10 scores other classes \(airplane, automobile, bird, "
                                         r"cat and 6 more\) than .*other \(kind0, kind1, kind2, kind3 and 6 more\)"):
        train(finetune(folder, tmp_path / "a", weights="resnet20.cifar10", freeze="backbone", lr=0.0, max_steps=1,
                       cache_dir=str(tmp_path / "cache")))
    fresh = resnets.create_model(weights=tmp_path / "a" / "model.safetensors").state_dict()
    assert not torch.equal(fresh["fc.weight"], pretrained["fc.weight"])
    assert torch.equal(fresh["layer1.0.conv1.weight"], pretrained["layer1.0.conv1.weight"])
    root, _ = cifar
    train(finetune(root, tmp_path / "b", weights="resnet20.cifar10", freeze="backbone", lr=0.0, max_steps=1))
    kept = resnets.create_model(weights=tmp_path / "b" / "model.safetensors").state_dict()
    assert torch.equal(kept["fc.weight"], pretrained["fc.weight"])
