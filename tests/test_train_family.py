"""The family through the trainer: each recipe trains a pre-activation, a wide and an attention net, and the
written model file reloads by name to the logged error."""

from __future__ import annotations

import pytest
import torch
from test_train import cifar, tiny_config  # noqa: F401  (the module's fake CIFAR fixture)

import resnets
from resnets.train import train

NETS = {  # registry name and kwargs that shrink it to a few seconds an epoch
    "resnet164v2": {"layers": [1, 1, 1]},
    "wide_resnet16_8": {"widths": [32, 64, 128], "dropout": 0.3},
    "seresnext26d_32x4d": {"layers": [1, 1, 1, 1]},
}
RECIPES = ["fast-cifar", "paper-cifar", "finetune"]


# Each recipe with each net once in the suite (a diagonal); the other pairs with --exhaustive.
PAIRS = [pytest.param(name, recipe, marks=[] if i == j else pytest.mark.exhaustive)
         for i, name in enumerate(NETS) for j, recipe in enumerate(RECIPES)]


@pytest.mark.slow
@pytest.mark.parametrize("name, recipe", PAIRS)
def test_each_recipe_trains_the_family_and_the_file_reloads(cifar, tmp_path, recipe, name):  # noqa: F811
    size = {"seresnext26d_32x4d": 64}.get(name)
    with pytest.warns(UserWarning, match="pretrained") if recipe == "finetune" else _nothing():
        config = tiny_config(cifar, tmp_path, recipe=recipe, model=name, model_kwargs=NETS[name], epochs=1,
                             image_size=size)
    result = train(config)
    assert torch.isfinite(torch.tensor(result["train_loss"]))
    model = resnets.create_model(weights=tmp_path / "model.safetensors").eval()
    assert model.pretrained_cfg.model == name
    reference = resnets.create_model(name, num_classes=10, **NETS[name])
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, size or 32, size or 32))).all()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
