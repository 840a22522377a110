"""The two blocks, their shortcuts, and the plain (shortcut-free) variant."""

import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets import BasicBlock, Bottleneck, PadShortcut, convolutional_block, identity_block


def test_option_a_subsamples_and_zero_pads_exactly():
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0
    assert sum(p.numel() for p in PadShortcut(16, 32, 2).parameters()) == 0


def test_identity_block_adds_its_input():
    block = identity_block(BasicBlock, 32).eval()
    assert block.downsample is None
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        branch = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
        assert torch.allclose(block(x), F.relu(branch + x), atol=1e-6)


def test_convolutional_block_projects_the_shortcut():
    block = convolutional_block(Bottleneck, 256, 128, stride=2).eval()
    conv, bn = block.downsample
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.out_channels == 512
    x = torch.randn(1, 256, 16, 16)
    with torch.no_grad():
        out = block(x)
        branch = block.bn3(block.conv3(F.relu(block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x))))))))
        assert torch.allclose(out, F.relu(branch + bn(conv(x))), atol=1e-5)
    assert out.shape == (1, 512, 8, 8)
    with pytest.raises(ValueError, match="identity_block"):
        convolutional_block(BasicBlock, 64, 64, stride=1)


def test_block_built_network():
    """A user can stack the public blocks into their own network."""
    net = torch.nn.Sequential(
        convolutional_block(BasicBlock, 3, 16, stride=1), identity_block(BasicBlock, 16),
        convolutional_block(BasicBlock, 16, 32), identity_block(BasicBlock, 32),
    )
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 32, 16, 16)


@pytest.mark.parametrize("name", ["plain20", "plain34", "plain50"])
def test_plain_nets_have_no_shortcut_path(name):
    """Zero every block's residual branch: a plain net then outputs zeros, a ResNet passes x through."""
    for residual in (False, True):
        model = resnets.create_model(name.replace("plain", "resnet") if residual else name).eval()
        stage = model.layer1
        for block in stage:
            block.zero_init_last()  # the last BN's scale
            torch.nn.init.zeros_(block.bn3.bias if hasattr(block, "bn3") else block.bn2.bias)
        x = torch.rand(1, stage[0].conv1.in_channels, 8, 8)
        with torch.no_grad():
            out = stage(x)
        if residual:
            first = stage[0]
            expected = x if first.downsample is None else F.relu(first.downsample(x))
            assert torch.allclose(out, expected, atol=1e-6)
        else:
            assert torch.count_nonzero(out) == 0
            assert all(b.downsample is None for b in model.modules() if isinstance(b, (BasicBlock, Bottleneck)))
