"""The ResNet family beyond the paper: ResNeXt and Wide ResNet against torchvision, the CIFAR pre-activation and
Wide ResNets against independent reference code and the papers' parameter counts, and every block kind and option
kind through BN folding, classifier surgery, explanations and the shape contract."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from bn_reference import randomize_bn
from torch import nn

import resnets
from resnets.inference import fold_batchnorm, optimize
from resnets.layers import EvoNormS0

TORCHVISION = ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics (bn_reference) plus GroupNorm and EvoNorm affines (EvoNorm's gate too) and conv biases:
    nothing left at its default."""
    randomize_bn(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, (nn.GroupNorm, EvoNormS0)):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            if isinstance(m, EvoNormS0):
                m.v.data.copy_(torch.rand(m.v.shape, generator=g) + 0.5)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data.copy_(torch.randn(m.out_channels, generator=g) * 0.2)
    return model.eval()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_parameter_counts(name):
    with torch.device("meta"):
        assert count(resnets.create_model(name)) == count(getattr(torchvision.models, name)())


# One of each kind (ResNeXt 32x4d, 64x4d, Wide) in the suite; the 101-layer twins of the 50-layer ones in the sweep.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.exhaustive if n in ("resnext101_32x8d",
                                                                                        "wide_resnet101_2") else [])
                                  for n in TORCHVISION])
def test_torchvision_state_dict_gives_torchvision_outputs(name):
    torch.manual_seed(0)
    reference = randomize_bn(getattr(torchvision.models, name)())
    ours = resnets.create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(ours(x), reference(x)) < 1e-4


def test_builders_take_torchvision_weights_files(tmp_path):
    """``resnets.resnext50_32x4d(weights=file)`` reads a torchvision checkpoint as torchvision's builder would."""
    reference = randomize_bn(torchvision.models.resnext50_32x4d())
    path = tmp_path / "resnext50_32x4d.pth"
    torch.save(reference.state_dict(), path)
    ours = resnets.resnext50_32x4d(weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(ours(x), reference(x)) < 1e-4


# --- the CIFAR pre-activation nets and Wide ResNets ------------------------------------------------------------


def test_cifar_v2_and_wide_parameter_counts_match_the_papers():
    with torch.device("meta"):
        nets = {name: resnets.create_model(name) for name in
                ("resnet110v2", "resnet164v2", "resnet1001v2", "wide_resnet28_10", "wide_resnet16_8")}
    # Identity Mappings (He et al. 2016), Table 2/3: 1.7M (110 and 164), 10.2M (1001). The 1001's 10.2M is its
    # conv and fc weights (10,176,...); its BN affines add 0.15M (10.33M with them).
    assert round(count(nets["resnet110v2"]) / 1e6, 1) == 1.7
    assert round(count(nets["resnet164v2"]) / 1e6, 1) == 1.7
    weights = sum(m.weight.numel() for m in nets["resnet1001v2"].modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert round(weights / 1e6, 1) == 10.2
    # Wide ResNets (Zagoruyko & Komodakis 2016), Table 5/1: WRN-28-10 36.5M, WRN-16-8 11.0M.
    assert round(count(nets["wide_resnet28_10"]) / 1e6, 1) == 36.5
    assert round(count(nets["wide_resnet16_8"]) / 1e6, 1) == 11.0


class WideBasic(nn.Module):
    """Zagoruyko & Komodakis' block as their PyTorch port writes it (BN-ReLU shared by the 1x1 shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        if not self.equal:
            x = torch.relu(self.bn1(x))
            out = x
        else:
            out = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
        return (x if self.equal else self.convShortcut(x)) + out


class WideResNet(nn.Module):
    def __init__(self, depth: int, k: int) -> None:
        super().__init__()
        n, widths = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.blocks = nn.ModuleList(
            nn.Sequential(*[WideBasic(widths[i] if j == 0 else widths[i + 1], widths[i + 1],
                                      (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)]) for i in range(3))
        self.bn1, self.fc = nn.BatchNorm2d(widths[3]), nn.Linear(widths[3], 10)

    def forward(self, x):
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        x = torch.relu(self.bn1(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def wide_to_ours(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        k = k.replace("convShortcut", "downsample")
        if k.startswith("blocks."):
            _, stage, rest = k.split(".", 2)
            k = f"layer{int(stage) + 1}." + rest.replace("bn1", "norm1").replace("bn2", "norm2")
        elif k.startswith("bn1."):
            k = "norm." + k[4:]
        out[k] = v
    return out


def test_wide_resnet_matches_the_reference_code():
    torch.manual_seed(0)
    reference = randomize_bn(WideResNet(16, 8))
    ours = resnets.create_model("wide_resnet16_8").eval()
    ours.load_state_dict(wide_to_ours(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(ours(x), reference(x)) < 1e-4


def test_cifar_preact_bottleneck_matches_timm_blocks():
    """resnet164v2's stages are timm's ResNetV2 stages (Kaiming's pre-act bottleneck); timm has no CIFAR stem,
    so its 7x7 stem and pool are swapped for the 3x3 one before comparing."""
    timm = pytest.importorskip("timm")
    from timm.models.resnetv2 import ResNetV2

    torch.manual_seed(0)
    reference = ResNetV2(layers=[18, 18, 18], channels=(64, 128, 256), stem_chs=16, num_classes=10,
                         conv_layer=timm.layers.create_conv2d, norm_layer=timm.layers.BatchNormAct2d)
    reference.stem = nn.Sequential()
    reference.stem.add_module("conv", nn.Conv2d(3, 16, 3, 1, 1, bias=False))
    randomize_bn(reference)
    state = {}
    for k, v in reference.state_dict().items():
        k = k.replace("stem.conv", "conv1").replace("downsample.conv", "downsample")
        if k.startswith("stages."):
            _, stage, _, rest = k.split(".", 3)
            k = f"layer{int(stage) + 1}.{rest}"
        state[k.replace("head.fc", "fc")] = v.flatten(1) if k == "head.fc.weight" else v
    ours = resnets.create_model("resnet164v2").eval()
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(ours(x), reference(x)) < 1e-4


def test_wide_resnet_dropout_sits_between_the_convs():
    model = resnets.create_model("wide_resnet16_8", dropout=0.3)
    block = model.layer2[1]
    assert block.dropout == 0.3
    x = torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        block.eval()
        a, b = block(x), block(x)
        assert torch.equal(a, b)  # no dropout in eval mode
        block.train()
        assert not torch.equal(block(x), block(x))


# --- every block kind through the rest of the package ------------------------------------------------------------

SMALL = {  # one block per stage: every layer type of the named families at a fraction of the cost
    "keras-v2": dict(block="preact_bottleneck", layers=(1, 1, 2, 1), stem_pool="max_zero_pad", down_last=True,
                     shortcut="P", conv_bias=True, bn_eps=1.001e-5),
    "timm-v2-basic": dict(block="preact_basic", layers=(1, 1, 1, 1)),
    "bit": dict(block="preact_bottleneck", layers=(1, 1, 1, 1), stem_pool="max_zero_pad", norm="group", conv="std"),
    "resnext-se-d": dict(block="bottleneck", layers=(1, 1, 1, 1), groups=32, base_width=4, stem="deep",
                         avg_down=True, attn="se"),
    "eca-tiered": dict(block="bottleneck", layers=(1, 1, 1, 1), stem="deep_tiered", avg_down=True, attn="eca"),
    "resnet-rs": dict(block="bottleneck", layers=(1, 1, 1, 1), stem="deep", stem_pool="conv", avg_down=True,
                      attn="se", attn_ratio=0.25),
    "groupnorm": dict(block="basic", layers=(1, 1, 1, 1), norm="group"),
    "wide-cifar": dict(block="preact_basic", layers=(2, 2, 2), widths=(32, 64, 128), stem="cifar", stem_width=16,
                       num_classes=10),
    "aa-avg-d": dict(block="bottleneck", layers=(1, 1, 1, 1), stem="deep", avg_down=True, aa="avg"),
    "blur-basic": dict(block="basic", layers=(1, 1, 1, 1), aa="blur"),
    "senet": dict(block="bottleneck", layers=(1, 1, 1, 1), groups=64, base_width=4, stem="deep", stem_width=64,
                  reduce_first=2, down_kernel=3, attn="se"),
    "pruned-eca": dict(block="bottleneck", layers=(1, 2, 1, 1), stem="deep", avg_down=True, attn="eca",
                       block_channels=(((47, 18, 19),), ((85, 37, 171), (107, 80, 171)), ((198, 126, 818),),
                                       ((492, 237, 2022),))),
    "timm-v2-d": dict(block="preact_basic", layers=(1, 1, 1, 1), stem="deep", avg_down=True),
    "evonorm-v2-d": dict(block="preact_bottleneck", layers=(1, 1, 1, 1), stem="deep", avg_down=True, norm="evonorm"),
}
# One of each block class, for what depends on it alone.
BLOCK_KINDS = {"basic": "groupnorm", "bottleneck": "resnext-se-d", "preact_basic": "timm-v2-basic",
               "preact_bottleneck": "keras-v2"}


def small(kind: str, **kwargs) -> nn.Module:
    return randomize_norms(resnets.ResNet(**{**SMALL[kind], **kwargs}))


def small_input(model: resnets.ResNet) -> torch.Tensor:
    """Two images at the smallest size every stage of ``model`` sees (32 for CIFAR stems, else 64)."""
    size = 32 if model.stem_type == "cifar" else 64
    return torch.randn(2, 3, size, size)


@pytest.mark.parametrize("kind", list(SMALL))
def test_folded_model_matches_eager_for_every_block_kind(kind):
    """Folding pairs each BN with the conv before it only: a pre-activation norm (after an add) stays."""
    model = small(kind)
    x = small_input(model)
    with torch.no_grad():
        expected = model(x)
    preact_norms = sum(isinstance(m, resnets.blocks.PreActBlock) for m in model.modules()) + model.preact
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == (batchnorms - preact_norms if batchnorms else 0)
    with torch.no_grad():
        assert relative_error(folded(x), expected) < 1e-4
    fast = optimize(model, "fp32", compile=False)
    assert relative_error(fast(x), expected) < 1e-4
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert left == (preact_norms if batchnorms else 0)  # one norm1 per pre-activation block, and the final norm


def test_weight_standardised_convs_are_frozen_exactly():
    from resnets.inference.fold import freeze_standardized_convs
    from resnets.layers import StdConv2d

    model = small("bit")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        frozen = copy.deepcopy(model)
        n = sum(isinstance(m, StdConv2d) for m in model.modules())
        assert n > 0 and freeze_standardized_convs(frozen) == n
        assert not any(isinstance(m, StdConv2d) for m in frozen.modules())
        assert relative_error(frozen(x), expected) < 1e-5


# Options inside post-activation blocks leave the head and its maps as resnext-se-d has them: not explained again.
BLOCK_INTERNAL = ("aa-avg-d", "blur-basic", "senet", "pruned-eca")


@pytest.mark.parametrize("kind", [k for k in SMALL if k not in BLOCK_INTERNAL])
def test_cam_of_every_block_kind_adds_up_to_the_logit(kind):
    """CAM's map of the last stage (the post-norm map the head pools, for pre-activation nets) averages to the logit;
    Grad-CAM explains an inner stage."""
    model = small(kind)
    x = small_input(model)
    found = resnets.explain(model, x, method="cam")
    with torch.no_grad():
        logits = model(x)
    cam_logits = found.raw_maps.mean((1, 2)) + model.fc.bias[found.classes]
    assert torch.allclose(cam_logits, logits.gather(1, found.classes[:, None])[:, 0], atol=1e-4)
    grad = resnets.explain(model, x, method="gradcam", layer=2)
    assert grad.maps.shape == (2, *x.shape[-2:]) and torch.isfinite(grad.raw_maps).all()


@pytest.mark.parametrize("block", list(BLOCK_KINDS))
def test_reset_classifier_of_every_block_kind(block):
    """A new head of any size on the same features, none (pooled features), or the bare feature map."""
    model = small(BLOCK_KINDS[block])
    x = small_input(model)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(5)
        assert model.get_classifier().in_features == model.num_features and model(x).shape == (2, 5)
        model.reset_classifier(0)
        assert torch.equal(model(x), features)
        model.reset_classifier(0, global_pool="")
        fmap = model(x)
        assert fmap.ndim == 4 and fmap.shape[1] == model.num_features
        model.reset_classifier(3, global_pool="max")
        assert model(x).shape == (2, 3)


def test_keras_v2_stride_placement_and_feature_info():
    model = resnets.create_model("resnet50v2", num_classes=0, global_pool="").eval()
    with torch.device("meta"):
        outs = model.to("meta").forward_intermediates(torch.empty(1, 3, 224, 224, device="meta"))
    # Keras: each stack but the last ends with the stride-2 block, so C2 is already at 1/8 (index 0: the stem's map).
    assert [tuple(o.shape[1:]) for o in outs] == [(64, 112, 112), (256, 28, 28), (512, 14, 14), (1024, 7, 7),
                                                  (2048, 7, 7)]
    assert [f["reduction"] for f in model.feature_info] == [2, 8, 16, 32, 32]
    assert model.layer1[0].downsample.stride == (1, 1) and model.layer1[2].conv2.stride == (2, 2)


QUICK_SHAPES = {"resnet50", "resnet20", "resnext50_32x4d", "resnet50v2", "resnet164v2", "wide_resnet16_8",
                "resnet26t", "seresnext26d_32x4d", "ecaresnet50t", "resnetrs50", "resnet50_gn", "resnetv2_50x1_bit",
                "resnetaa50d", "resnetblur50", "ecaresnet50d_pruned", "senet154", "resnetv2_18d", "resnetv2_50d_evos"}


@pytest.mark.parametrize("name", [n if n in QUICK_SHAPES else pytest.param(n, marks=pytest.mark.exhaustive)
                                  for n in resnets.list_models()])
def test_every_model_builds_with_its_shapes(name):
    """Output and stage shapes of every registered network (on the meta device: shapes without compute)."""
    with torch.device("meta"):
        model = resnets.create_model(name).eval()
        classes = 10 if model.stem_type == "cifar" else 1000
        size = model.input_size[-1]
        x = torch.empty(1, 3, size, size)
        assert model(x).shape == (1, classes)
        outs = model.forward_intermediates(x)
    assert [o.shape[1] for o in outs] == [f["num_chs"] for f in model.feature_info]
    assert [size // o.shape[-1] for o in outs] == [f["reduction"] for f in model.feature_info]
    assert model.num_features == model.feature_info[-1]["num_chs"]
