"""The ResNet module: a stem, stages of residual blocks, and a head.

One class covers every network of the paper; the variants (ImageNet or CIFAR stem, shortcut
A/B/C, v1/v1.5 stride placement, plain or residual) are constructor arguments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BasicBlock, Block, Bottleneck, Shortcut

Stem = Literal["imagenet", "cifar"]
Pool = Literal["avg", "max", ""]

# Table 1 of the paper: blocks per stage for the ImageNet networks.
IMAGENET_DEPTHS: dict[int, tuple[Block, tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)

# Section 4.2: CIFAR nets have 6n+2 layers in three stages of 16, 32, 64 channels.
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
CIFAR_WIDTHS = (16, 32, 64)


def cifar_blocks(depth: int) -> tuple[int, int, int]:
    """Blocks per stage of the 6n+2-layer CIFAR network."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return (n, n, n)


def make_stage(block: Block, in_ch: int, width: int, blocks: int, stride: int, **block_kwargs) -> nn.Sequential:
    """A stage: one block that may change the shape, then identity blocks."""
    first = block(in_ch, width, stride, **block_kwargs)
    out_ch = width * block.expansion
    rest = [block(out_ch, width, 1, **block_kwargs) for _ in range(blocks - 1)]
    return nn.Sequential(first, *rest)


class ResNet(nn.Module):
    """A residual (or, with ``residual=False``, plain) network.

    Input is an NCHW float tensor.  ``num_classes=0`` removes the classifier (the output
    is then the pooled features, or the feature map with ``global_pool=""``).
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        widths: Sequence[int] = IMAGENET_WIDTHS,
        *,
        stem: Stem = "imagenet",
        num_classes: int = 1000,
        in_chans: int = 3,
        shortcut: Shortcut = "B",
        residual: bool = True,
        stride_in_1x1: bool = False,
        conv_bias: bool = False,
        bn_eps: float = 1e-5,
        zero_init_residual: bool = False,
        global_pool: Pool = "avg",
        drop_rate: float = 0.0,
        classifier_activation: str | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"{len(layers)} stage depths given for {len(widths)} stage widths")
        if global_pool not in ("avg", "max", ""):
            raise ValueError(f"global_pool must be 'avg', 'max' or '', got {global_pool!r}")
        if num_classes and not global_pool:
            raise ValueError("a classifier needs global pooling; pass num_classes=0 for the feature map")
        if classifier_activation not in (None, "softmax", "sigmoid"):
            raise ValueError(f"classifier_activation must be None, 'softmax' or 'sigmoid', got {classifier_activation!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate (Keras' dropout_rate) must lie in [0, 1), got {drop_rate}")
        self.stem_type = stem
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.classifier_activation = classifier_activation
        self.input_size = (3, 224, 224) if stem == "imagenet" else (3, 32, 32)

        stem_ch = widths[0]
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_ch, 7, stride=2, padding=3, bias=conv_bias)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_ch, 3, stride=1, padding=1, bias=conv_bias)
        self.bn1 = nn.BatchNorm2d(stem_ch, eps=bn_eps)
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        block_kwargs = dict(
            shortcut=shortcut, residual=residual, conv_bias=conv_bias, bn_eps=bn_eps, stride_in_1x1=stride_in_1x1
        )
        in_ch = stem_ch
        self.stage_names: list[str] = []
        self.feature_info: list[dict] = []
        reduction = 4 if stem == "imagenet" else 1
        for i, (blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            name = f"layer{i + 1}"
            self.add_module(name, make_stage(block, in_ch, width, blocks, stride, **block_kwargs))
            in_ch = width * block.expansion
            self.stage_names.append(name)
            self.feature_info.append({"module": name, "num_chs": in_ch, "reduction": reduction})
        self.num_features = in_ch
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(in_ch, num_classes) if num_classes else nn.Identity()

        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    # --- forward passes -------------------------------------------------------------

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected an NCHW batch (4 dims), got shape {tuple(x.shape)}")
        if x.shape[1] != self.conv1.in_channels:
            raise ValueError(
                f"expected {self.conv1.in_channels} input channels (NCHW), got shape {tuple(x.shape)}"
                + ("; for NHWC input use x.permute(0, 3, 1, 2)" if x.shape[-1] == self.conv1.in_channels else "")
            )
        return self.maxpool(F.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, ``(N, num_features, H/32, W/32)`` for the ImageNet nets."""
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Stage outputs for detection/segmentation backbones.

        ``indices`` are 1-based stage numbers (1..4 = C2..C5 for the ImageNet nets); the
        default is every stage.  Stages after the last requested one are not run.
        """
        wanted = sorted(set(indices)) if indices is not None else list(range(1, len(self.stage_names) + 1))
        if not wanted or wanted[0] < 1 or wanted[-1] > len(self.stage_names):
            raise ValueError(f"stage indices must lie in 1..{len(self.stage_names)}, got {indices}")
        outs = []
        x = self.forward_stem(x)
        for i, name in enumerate(self.stage_names[: wanted[-1]], start=1):
            x = getattr(self, name)(x)
            if i in wanted:
                outs.append(x)
        return outs

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "avg":
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if self.global_pool == "max":
            return torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify a feature map; ``pre_logits=True`` stops before the classifier."""
        x = self.pool(x)
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        if pre_logits or not self.num_classes:
            return x
        x = self.fc(x)
        if self.classifier_activation == "softmax":
            return x.softmax(dim=1)
        if self.classifier_activation == "sigmoid":
            return x.sigmoid()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # --- surgery --------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Pool | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it)."""
        if global_pool is not None:
            self.global_pool = global_pool
        if num_classes and not self.global_pool:
            raise ValueError("a classifier needs global pooling; pass global_pool='avg' or 'max'")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    # --- Keras-like conveniences ----------------------------------------------------

    def summary(self, input_size: Sequence[int] | None = None, print_fn=print, depth: int = 3):
        """Print a Keras-style table of layers, output shapes and parameters; returns the stats."""
        from .summary import summarize

        return summarize(self, input_size or self.input_size, print_fn=print_fn, depth=depth)

    @torch.inference_mode()
    def predict(self, x, batch_size: int | None = None, verbose: int | str = "auto") -> np.ndarray:
        """Keras-style prediction: NHWC numpy (as ``preprocess_input`` returns) or NCHW tensor in, numpy out.

        ``batch_size``: images per forward pass (default None: 32, as Keras); ``verbose``: 0 silent, 1 a
        progress bar, ``"auto"`` (default) a bar when there is more than one batch, 2 none (Keras' one line
        per epoch). Image files and folders are not read here: use ``resnets.load_img`` and
        ``preprocess_input``, or ``resnets predict DIR``.
        """
        if isinstance(x, (str, os.PathLike)):
            raise TypeError(f"predict takes a batch of images (numpy NHWC or a torch NCHW tensor), not the path "
                            f"{os.fspath(x)!r}: load files with resnets.load_img + preprocess_input, or run "
                            "'resnets predict PATH' for files and folders")
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        batch_size = 32 if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(x, np.ndarray):
            if x.ndim == 3:
                x = x[None]
            if x.ndim != 4:
                raise ValueError(f"expected a batch of images, got array of shape {x.shape}")
            channels = self.conv1.in_channels
            if x.shape[-1] == channels and x.shape[1] != channels:
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            x = torch.from_numpy(np.asarray(x, dtype=np.float32))
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"predict takes a numpy array or a torch tensor of images, got {type(x).__name__}")
        from .progress import progress_bar

        chunks = x.split(batch_size)
        show = verbose == 1 or (verbose == "auto" and len(chunks) > 1)
        was_training = self.training
        self.eval()
        outs = []
        try:
            param = next(self.parameters())
            with progress_bar(len(chunks), "predict", show, unit="batch") as bar:
                for chunk in chunks:
                    outs.append(self(chunk.to(param.device, param.dtype)).float().cpu())
                    bar.update(1)
        finally:
            self.train(was_training)
        return torch.cat(outs).numpy()
