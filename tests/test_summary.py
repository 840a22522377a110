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
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert s.total_params == real and s.keras_total_params == real + stats == sum(r.params for r in s.rows)
    assert s.trainable_params == real and s.non_trainable_params == stats


def test_keras_counts_batchnorm_statistics_as_non_trainable():
    """The Keras tutorial's ResNet-50 shows 53,120 non-trainable parameters (its BN moving mean and variance);
    Keras' model has conv biases too, so only the non-trainable count is comparable."""
    lines = []
    s = resnets.create_model("resnet50").summary(print_fn=lines.append)
    assert s.non_trainable_params == 53_120
    text = "\n".join(lines)
    assert "Total params: 25,610,152" in text and "Trainable params: 25,557,032" in text
    assert "Non-trainable params: 53,120" in text and "PyTorch parameters(): 25,557,032" in text


def test_frozen_parameters_are_non_trainable_and_text_is_printed():
    model = resnets.resnet20()
    for p in model.conv1.parameters():
        p.requires_grad_(False)
    lines = []
    s = model.summary((3, 40, 56), print_fn=lines.append)
    stats = 2 * (16 * 7 + 32 * 6 + 64 * 6)  # moving mean and variance of every BN: 19 of 16, 32, 64 channels
    assert s.non_trainable_params == 432 + stats
    text = "\n".join(lines)
    assert f"Total params: {269_722 + stats:,}" in text and f"Non-trainable params: {432 + stats:,}" in text
    assert [line.split()[2:6] for line in lines[0].splitlines() if line.startswith("layer3.2.bn2 ")] == [
        ["(1,", "64,", "10,", "14)"]]


def test_macs_scale_with_input_size():
    model = resnets.resnet50()
    small = model.summary((3, 128, 96), print_fn=None).macs
    big = model.summary((3, 256, 192), print_fn=None).macs
    assert big / small == pytest.approx(4.0, rel=0.02)
