"""model.summary(): totals against the real counts, multiply-adds against torchvision's published numbers."""

import pytest
import torchvision

import resnets


@pytest.mark.parametrize("name, weights", [("resnet18", "ResNet18_Weights"), ("resnet50", "ResNet50_Weights"),
                                           ("resnet152", "ResNet152_Weights")])
def test_macs_match_torchvision_metadata(name, weights):
    published_gflops = getattr(torchvision.models, weights).IMAGENET1K_V1.meta["_ops"]
    s = resnets.create_model(name).summary(print_fn=None)
    assert s.macs / 1e9 == pytest.approx(published_gflops, rel=2e-3)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet56", "plain20"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_rows_add_up_to_the_parameter_count(name, depth):
    model = resnets.create_model(name)
    s = resnets.summarize(model, model.input_size, print_fn=None, depth=depth)
    real = sum(p.numel() for p in model.parameters())
    assert s.total_params == real == sum(r.params for r in s.rows)
    assert s.trainable_params == real and s.non_trainable_params == 0


def test_frozen_parameters_are_non_trainable_and_text_is_printed():
    model = resnets.resnet20()
    for p in model.conv1.parameters():
        p.requires_grad_(False)
    lines = []
    s = model.summary((3, 40, 56), print_fn=lines.append)
    assert s.non_trainable_params == 432
    text = "\n".join(lines)
    assert "Total params: 269,722" in text and "Non-trainable params: 432" in text
    assert [line.split()[2:6] for line in lines[0].splitlines() if line.startswith("layer3.2.bn2 ")] == [
        ["(1,", "64,", "10,", "14)"]]


def test_macs_scale_with_input_size():
    model = resnets.resnet50()
    small = model.summary((3, 128, 96), print_fn=None).macs
    big = model.summary((3, 256, 192), print_fn=None).macs
    assert big / small == pytest.approx(4.0, rel=0.02)
