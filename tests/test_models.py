"""The named networks against the paper's tables and torchvision's reference implementation."""

import pytest
import torch
import torchvision
from bn_reference import randomize_bn

import resnets
from resnets.errors import BadInput

# Parameter counts: torchvision's published models and the paper's CIFAR nets (option A).
PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
    "resnet56": 853_018, "resnet110": 1_727_962, "resnet1202": 19_421_274,
}
IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]




def test_registry_lists_every_paper_network():
    names = resnets.list_models()
    for depth in (18, 34, 50, 101, 152):
        assert f"resnet{depth}" in names and f"plain{depth}" in names
    for depth in (20, 32, 44, 56, 110):
        assert f"resnet{depth}" in names and f"plain{depth}" in names
    assert "resnet1202" in names
    assert resnets.list_models("plain*") == [n for n in names if n.startswith("plain")]
    with pytest.raises(ValueError, match="unknown model 'resnet51'"):
        resnets.create_model("resnet51")


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name):
    model = resnets.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_cifar_nets_have_option_a_param_count(depth):
    plain = resnets.create_model(f"plain{depth}")
    assert sum(p.numel() for p in plain.parameters()) == PARAMS[f"resnet{depth}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGENET)
def test_torchvision_state_dict_gives_torchvision_outputs(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)()
    randomize_bn(reference)
    reference.eval()
    ours = resnets.create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert (got - expected).abs().max().item() < 1e-4


PAPER = [*PARAMS, *resnets.list_models("plain*")]  # the paper's networks (the family: tests/test_family.py)


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_output_shapes_at_several_input_sizes(name):
    model = resnets.create_model(name).eval()
    classes = 1000 if model.stem_type == "imagenet" else 10
    sizes = [(32, 32), (48, 80)] + ([(224, 224)] if name in ("resnet18", "resnet50") else [])
    with torch.no_grad():
        for h, w in sizes:
            assert model(torch.randn(1, 3, h, w)).shape == (1, classes)


def test_feature_map_shapes():
    model = resnets.resnet50(num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 2048, 7, 7)
        assert model.forward_features(torch.randn(1, 3, 160, 96)).shape == (1, 2048, 5, 3)
    cifar = resnets.resnet56().eval()
    with torch.no_grad():
        assert cifar.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 64, 8, 8)


def test_multi_scale_features_match_stage_outputs():
    model = resnets.resnet18().eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        stem, c2, c3, c4, c5 = model.forward_intermediates(x)
        assert [t.shape[1:] for t in (stem, c2, c3, c4, c5)] == [
            (64, 64, 64), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
        assert torch.equal(c5, model.forward_features(x))
        assert torch.equal(model.maxpool(stem), model.forward_stem(x))
        only = model.forward_intermediates(x, indices=[2, 4])
        assert torch.equal(only[0], c3) and torch.equal(only[1], c5)
    assert [f["num_chs"] for f in model.feature_info] == [64, 64, 128, 256, 512]
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    with pytest.raises(BadInput, match=r"indices=\[5\].*0\.\.4"):
        model.forward_intermediates(x, indices=[5])


def test_head_and_classifier_surgery():
    model = resnets.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        assert feats.shape == (2, 512)
        assert torch.allclose(model.fc(feats), model(x), atol=1e-6)
        model.reset_classifier(7)
        assert model(x).shape == (2, 7)
        model.reset_classifier(0)
        assert torch.allclose(model(x), feats, atol=1e-6)


def test_zero_init_residual_zeroes_last_bn_of_each_block():
    model = resnets.resnet50(zero_init_residual=True)
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            assert torch.count_nonzero(block.bn3.weight) == 0
            assert torch.count_nonzero(block.bn1.weight) == block.bn1.num_features
    # Each block starts as the identity map (after ReLU) on non-negative input.
    block = resnets.resnet20(zero_init_residual=True).layer1[0].eval()
    x = torch.rand(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), x)


def test_v1_and_v1_5_stride_placement():
    v15 = resnets.resnet50()
    v1 = resnets.resnet50(stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert sum(p.numel() for p in v1.parameters()) == PARAMS["resnet50"]


def test_conv_bias_and_bn_eps_options():
    model = resnets.resnet50(conv_bias=True, bn_eps=1.001e-5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs)
    assert all(m.eps == 1.001e-5 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    extra = sum(c.out_channels for c in convs)
    assert sum(p.numel() for p in model.parameters()) == PARAMS["resnet50"] + extra


def test_shortcut_options_change_only_the_shortcuts():
    a = resnets.resnet20(shortcut="A")
    b = resnets.resnet20(shortcut="B")
    c = resnets.resnet20(shortcut="C")
    n = [sum(p.numel() for p in m.parameters()) for m in (a, b, c)]
    # B adds two projections (16->32, 32->64) with BN; C adds one on every one of the 9 blocks.
    assert n[1] - n[0] == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    blocks = [(16, 16)] * 3 + [(16, 32)] + [(32, 32)] * 2 + [(32, 64)] + [(64, 64)] * 2
    assert n[2] - n[0] == sum(i * o + 2 * o for i, o in blocks)
    with pytest.raises(ValueError, match="shortcut must be one of 'A', 'B', 'C', 'P'"):
        resnets.resnet20(shortcut="D")


def test_rejects_wrong_input_layout_with_a_hint():
    model = resnets.resnet18()
    with pytest.raises(ValueError, match="NHWC"):
        model(torch.randn(1, 64, 64, 3))
    with pytest.raises(ValueError, match="4 dims"):
        model(torch.randn(3, 64, 64))
