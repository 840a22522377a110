"""Our timm-named networks against timm itself: the same parameters, timm's state dicts load strictly
(resnetv2.py ones after :mod:`resnets.weights.timm_keys`), and with random weights and statistics the
outputs agree; files saved from timm load through ``create_model(name, weights=path)``.

In the suite: one network per option (stem, downsampling, anti-aliasing, attention, norm, conv kind, block kind,
pruned channels), its parameter count, tensor shapes (meta device) and outputs, through a file saved from timm, and
the giants' counts; ``--exhaustive``: the same for every other name, short of the giants (over 200M parameters),
whose shapes are checked but never run here.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import resnets
from resnets.registry import ARCHITECTURES
from resnets.weights.checkpoint import read_checkpoint
from resnets.weights.timm_keys import from_timm_resnetv2, is_timm_resnetv2

from bn_reference import randomize_bn

timm = pytest.importorskip("timm")

TIMM_MODELS = set(timm.list_models())
TIMM_NAMES = [n for n in resnets.list_models() if n in TIMM_MODELS]
# Networks over 200M parameters: parameter counts only (test_parameters checks this list stays right).
GIANTS = {"resnext101_32x32d", "resnetv2_50x3_bit", "resnetv2_101x3_bit", "resnetv2_152x2_bit", "resnetv2_152x4_bit"}
# One per option: tiered/deep/wide deep stems, avg-pool downsampling, SE/ECA/ResNeXt, GroupNorm, the ResNet-RS
# stem pool, pre-activation basic/bottleneck, BiT (StdConv2d + GroupNorm + zero-padded max-pool), average-pool
# and blur-pool anti-aliasing, pruned channels, SENet's half-width first convs and 3x3 projections, ResNetV2's
# deep stem and average-pool projections, EvoNorm.
QUICK = ["resnet10t", "resnet26t", "resnet18d", "resnet50s", "seresnext26d_32x4d", "ecaresnet26t", "resnet50_gn",
         "resnetrs50", "resnetv2_18", "resnetv2_50", "resnetv2_50x1_bit",
         "ecaresnetlight",  # the plain 7x7 stem stays 64 wide whatever stem_width says (once built 32 wide here)
         "resnetaa50d", "resnetblur50", "ecaresnet50d_pruned", "senet154", "resnetv2_18d", "resnetv2_50d_evos"]
# The quick tier's outputs of these: one block per stage, the same in timm and here (their kinds, at less cost;
# --exhaustive runs them whole).
SHALLOW = dict.fromkeys(["resnetaa50d", "resnetblur50", "senet154"], dict(layers=(1, 1, 1, 1)))
SIZE = (2, 3, 72, 72)  # 72 -> 36 -> 18 -> 9 -> 5 -> 3: odd maps for the ceil-mode average pools and paddings
TOLERANCE = 1e-4


def to_ours(name: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's state dict under our names: resnetv2.py nets renamed, resnet.py nets as they are."""
    if name.startswith("resnetv2_"):
        assert is_timm_resnetv2(state_dict)
        return from_timm_resnetv2(state_dict)
    assert not is_timm_resnetv2(state_dict)
    return state_dict


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (timm zero-inits each block's last norm or conv, which would hide the
    residual branches), random norm affines (GroupNorm and EvoNorm too, EvoNorm's gate) and BatchNorm
    statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.GroupNorm, timm.layers.EvoNorm2dS0)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                if getattr(m, "v", None) is not None:
                    m.v.copy_(torch.rand(m.v.shape, generator=g) + 0.5)
    return randomize_bn(model, seed)


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def input_size(name: str) -> tuple[int, int, int, int]:
    """SIZE, but 64 for anti-aliased nets: timm's 2x2 average pools floor an odd map where its shortcuts round up."""
    return (*SIZE[:2], 64, 64) if ARCHITECTURES[name][1].get("aa") else SIZE


def assert_same_outputs(ours: nn.Module, ref: nn.Module, name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(input_size(name))
    with torch.inference_mode():
        ref_features, ours_features = ref.forward_features(x), ours.forward_features(x)
        ref_logits, ours_logits = ref.forward_head(ref_features), ours.forward_head(ours_features)
    # Not a degenerate reference: the two images' features differ, the logits are not just the bias.
    assert (ref_features[0] - ref_features[1]).abs().max() > 1e-3 * ref_features.abs().max(), name
    assert (ref_logits - ref.get_classifier().bias).abs().max() > 0.1 * ref_logits.abs().max(), name
    errors = relative_error(ours_features, ref_features), relative_error(ours_logits, ref_logits)
    print(f"{name}: max relative error features {errors[0]:.2e}, logits {errors[1]:.2e}")
    assert max(errors) < TOLERANCE, f"{name}: relative errors {errors}"


def test_names_are_timms():
    """Every network our registry describes as timm's (or ResNet-RS, BiT) exists in timm under that name."""
    timm_like = [n for n, (doc, _) in ARCHITECTURES.items()
                 if doc.startswith(("timm ", "ResNet-RS", "BiT")) or re.match(r"(se|eca)resne|resnetv2_|resnetrs", n)]
    assert len(timm_like) >= 60
    assert not [n for n in timm_like if n not in TIMM_MODELS]
    assert not GIANTS - set(TIMM_NAMES) and not set(QUICK) - set(TIMM_NAMES)


@pytest.mark.parametrize("name", [n if n in QUICK or n in GIANTS else pytest.param(n, marks=pytest.mark.exhaustive)
                                  for n in TIMM_NAMES])
def test_parameters(name):
    """Same parameter count, and timm's state dict has exactly our tensors and shapes (meta device: no memory)."""
    with torch.device("meta"):
        ref = timm.create_model(name)
        ours = resnets.create_model(name)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in ref.parameters())
    assert (count > 200_000_000) == (name in GIANTS)
    expected = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in to_ours(name, ref.state_dict()).items()} == expected


def _check_outputs(name: str, tmp_path, **overrides) -> None:
    """timm's state dict, saved as timm saves it, loads strictly by name and file, and gives timm's outputs; a
    renamed ResNetV2 file also says which network it is."""
    ref = randomize(timm.create_model(name, **overrides))
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    if name.startswith("resnetv2_") and not overrides:
        assert read_checkpoint(path).model == name
    ours = resnets.create_model(name, weights=path, **overrides)
    assert_same_outputs(ours.eval(), ref, name)


@pytest.mark.parametrize("name", QUICK)
def test_outputs(name, tmp_path):
    _check_outputs(name, tmp_path, **SHALLOW.get(name, {}))


@pytest.mark.exhaustive
@pytest.mark.parametrize("name", [n for n in TIMM_NAMES if n not in GIANTS and (n not in QUICK or n in SHALLOW)])
def test_outputs_all(name, tmp_path):
    _check_outputs(name, tmp_path)


@pytest.mark.parametrize("name, filename", [
    ("resnetv2_50x1_bit", "model.safetensors"),
    ("resnetv2_18", "pytorch_model.bin"),
    ("seresnext26d_32x4d", "seresnext26d_32x4d.pth"),
])
def test_timm_file(tmp_path, name, filename):
    """A state dict saved from timm (torch.save, or safetensors as the Hub has them) loads by file name."""
    ref = randomize(timm.create_model(name), seed=1)
    path = tmp_path / filename
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(ref.state_dict(), str(path))
    else:
        torch.save(ref.state_dict(), path)
    ours = resnets.create_model(name, weights=path)
    assert_same_outputs(ours.eval(), ref, name)
    if name.startswith("resnetv2_"):  # a renamed ResNetV2 file also says which network it is
        assert resnets.create_model(weights=path).state_dict().keys() == ours.state_dict().keys()


def test_timm_file_without_head(tmp_path):
    """timm's num_classes=0 (no head.fc) loads as our feature extractor."""
    ref = timm.create_model("resnetv2_18", num_classes=0)
    path = tmp_path / "features.pth"
    torch.save(ref.state_dict(), path)
    ours = resnets.create_model("resnetv2_18", weights=path)
    assert ours.num_classes == 0


def test_timm_file_unsupported_layout(tmp_path):
    """A timm ResNetV2 kind we do not build (the ViT hybrids' post-activation stem, its norm) is refused naming
    the file and the tensor."""
    path = tmp_path / "resnetv2_50_hybrid.pth"
    torch.save({"stem.conv.weight": torch.zeros(64, 3, 7, 7), "stem.norm.weight": torch.zeros(64),
                "stages.0.blocks.0.conv1.weight": torch.zeros(64, 64, 1, 1)}, path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*stem\.norm\.weight"):
        resnets.create_model("resnetv2_50", weights=path)
