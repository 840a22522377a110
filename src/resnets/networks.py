"""The ResNet module: a stem, stages of residual blocks, and a head.

One class covers every network of the family; each variant is a constructor argument: the block
kind (basic, bottleneck, or their pre-activation forms), the stem (ImageNet 7x7, CIFAR 3x3, timm's
deep C/S/T stems; max-pool, Keras' zero-padded max-pool or ResNet-RS's strided conv after it), where a
stage downsamples (first block, or Keras V2's last), explicit per-block channels (pruned nets), and the block
options of :class:`~resnets.blocks.BlockOptions` (shortcut A/B/C/P, v1/v1.5 stride, groups and width, norm,
conv, attention, average-pool downsampling, anti-aliasing, dropout), plus stochastic depth.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BLOCKS, OPTION_NAMES, BasicBlock, Block, BlockOptions, Bottleneck, ResidualBlock
from .calibration import scaled_softmax
from .errors import BadInput, UnknownName
from .layers import activation, activation_layer, anti_alias, conv2d, norm_layer

Stem = Literal["imagenet", "cifar", "deep", "deep_tiered"]
StemPool = Literal["max", "max_zero_pad", "conv", ""]
Pool = Literal["avg", "max", ""]
# Per stage, per block: a bottleneck's three conv widths (first 1x1, 3x3, last 1x1), as timm's pruned nets have them.
BlockChannels = Sequence[Sequence[tuple[int, int, int]]]
STEMS: tuple[str, ...] = ("imagenet", "cifar", "deep", "deep_tiered")
STEM_POOLS: tuple[str, ...] = ("max", "max_zero_pad", "conv", "")

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


def cifar_blocks(depth: int, layers_per_block: int = 2) -> tuple[int, int, int]:
    """Blocks per stage of the CIFAR network of ``depth`` layers: 6n+2 (basic blocks) or 9n+2 (bottlenecks)."""
    per_stage = 3 * layers_per_block
    if (depth - 2) % per_stage:
        raise BadInput(f"a CIFAR ResNet of {layers_per_block}-conv blocks has depth {per_stage}n+2, got {depth}")
    n = (depth - 2) // per_stage
    return (n, n, n)


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """timm's rule for which of ``num_features`` feature maps to take: None all, an int the last n, a sequence those
    indices (negative ones from the end); returns them and the largest."""
    if indices is None:
        indices = num_features
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= num_features:
            raise BadInput(f"indices={indices} asks for the last {indices} feature maps, but there are 1 to "
                           f"{num_features}")
        take = list(range(num_features - indices, num_features))
    else:
        take = [num_features + i if i < 0 else i for i in indices]
        bad = [i for i, t in zip(indices, take) if not 0 <= t < num_features]
        if bad or not take:
            raise BadInput(f"indices={indices!r}: feature indices lie in 0..{num_features - 1} (or -{num_features}..-1 "
                           "from the end; 0 is the stem's map)")
    return take, max(take)


def make_stage(block: Block, in_ch: int, width: int, blocks: int, stride: int, *, down_last: bool = False,
               drop_paths: Sequence[float] | None = None,
               channels: Sequence[tuple[int, int, int]] | None = None, **block_kwargs) -> nn.Sequential:
    """A stage: one block that may change the shape, then identity blocks.

    ``down_last`` (Keras' ResNetV2): the first block changes the channels at stride 1, and the last
    one downsamples. ``drop_paths``: each block's stochastic-depth rate. ``channels``: each bottleneck's
    conv widths, where they follow no rule (pruned nets; the last one equal across the stage).
    """
    out_ch = channels[0][-1] if channels else width * block.expansion
    drop_paths = list(drop_paths) if drop_paths is not None else [0.0] * blocks
    strides = [1] * blocks
    strides[-1 if down_last else 0] = stride
    per_block = [{"channels": tuple(c)} for c in channels] if channels else [{}] * blocks
    return nn.Sequential(*[
        block(in_ch if i == 0 else out_ch, width, s, drop_path=dp, **block_kwargs, **extra)
        for i, (s, dp, extra) in enumerate(zip(strides, drop_paths, per_block))
    ])


def _stem_conv(stem: str, in_chans: int, width: int, o: BlockOptions) -> tuple[nn.Module, int]:
    """The stem's convolution(s) and their output channels (timm's deep stems: three 3x3 convs)."""
    if stem == "imagenet":
        return conv2d(o.conv, in_chans, width, 7, 2, bias=o.conv_bias), width
    if stem == "cifar":
        return conv2d(o.conv, in_chans, width, 3, 1, bias=o.conv_bias), width
    first, second = (3 * (width // 4), width) if stem == "deep_tiered" else (width, width)
    return nn.Sequential(
        conv2d(o.conv, in_chans, first, 3, 2), norm_layer(o.norm, first, o.bn_eps), activation_layer(o.norm),
        conv2d(o.conv, first, second, 3), norm_layer(o.norm, second, o.bn_eps), activation_layer(o.norm),
        conv2d(o.conv, second, 2 * width, 3, bias=o.conv_bias),
    ), 2 * width


def _stem_pool(kind: str, channels: int, o: BlockOptions) -> nn.Module:
    """After the stem conv: max-pool (-inf padding), Keras' max-pool after zero padding, ResNet-RS's
    strided conv, or nothing. Anti-aliased (``aa``, as timm): a 2x2 average pool instead of the max-pool, or
    a stride-1 max-pool then a blur pool; the conv at stride 1, then the pool."""
    if kind == "max_zero_pad" and o.aa:
        raise BadInput("aa is not built with stem_pool='max_zero_pad'; use 'max' or 'conv'")
    if kind == "max":
        if o.aa == "avg":
            return nn.AvgPool2d(2)
        if o.aa == "blur":
            return nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), anti_alias("blur", channels))
        return nn.MaxPool2d(3, stride=2, padding=1)
    if kind == "max_zero_pad":
        return nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, stride=2))
    if kind == "conv":
        pool = [anti_alias(o.aa, channels)] if o.aa else []
        return nn.Sequential(conv2d(o.conv, channels, channels, 3, 1 if o.aa else 2), *pool,
                             norm_layer(o.norm, channels, o.bn_eps), activation_layer(o.norm))
    return nn.Identity()


def _check_arguments(block, layers, widths, stem, stem_pool, num_classes, global_pool, classifier_activation,
                     drop_rate, drop_path_rate, block_options) -> tuple[Block, BlockOptions, str]:
    """ResNet's argument checks, Keras-style messages; returns the block class, its options and the stem pool."""
    if isinstance(block, str):
        if block not in BLOCKS:
            raise UnknownName(f"block must be one of {', '.join(map(repr, BLOCKS))}, got {block!r}")
        block = BLOCKS[block]
    unknown = sorted(set(block_options) - OPTION_NAMES)
    if unknown:
        raise TypeError(f"ResNet got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; the block "
                        f"options are {', '.join(sorted(OPTION_NAMES))}")
    if len(layers) != len(widths):
        raise BadInput(f"{len(layers)} stage depths given for {len(widths)} stage widths")
    if stem not in STEMS:
        raise UnknownName(f"stem must be one of {', '.join(map(repr, STEMS))}, got {stem!r}")
    stem_pool = ("" if stem == "cifar" else "max") if stem_pool is None else stem_pool
    if stem_pool not in STEM_POOLS:
        raise UnknownName(f"stem_pool must be one of {', '.join(map(repr, STEM_POOLS))}, got {stem_pool!r}")
    if global_pool not in ("avg", "max", ""):
        raise BadInput(f"global_pool must be 'avg', 'max' or '', got {global_pool!r}")
    if num_classes and not global_pool:
        raise BadInput("a classifier needs global pooling; pass num_classes=0 for the feature map")
    if classifier_activation not in (None, "softmax", "sigmoid"):
        raise BadInput(f"classifier_activation must be None, 'softmax' or 'sigmoid', got {classifier_activation!r}")
    if not 0.0 <= drop_rate < 1.0:
        raise BadInput(f"drop_rate (Keras' dropout_rate) must lie in [0, 1), got {drop_rate}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise BadInput(f"drop_path_rate must lie in [0, 1), got {drop_path_rate}")
    return block, BlockOptions(**block_options), stem_pool


def _check_block_channels(block: Block, layers: Sequence[int], block_channels: BlockChannels | None) -> None:
    """Explicit channels: one (first, inner, out) triple per block of a post-activation bottleneck net, and one
    output width per stage (the blocks of a stage add their outputs)."""
    if block_channels is None:
        return
    if block is not Bottleneck:
        raise BadInput("block_channels is built for post-activation bottlenecks (timm's pruned nets)")
    if [len(stage) for stage in block_channels] != list(layers):
        raise BadInput(f"block_channels must give a (first, inner, out) triple per block {tuple(layers)}, got "
                         f"{[len(stage) for stage in block_channels]} blocks")
    for i, stage in enumerate(block_channels):
        if any(len(c) != 3 for c in stage) or len({c[2] for c in stage}) != 1:
            raise BadInput(f"block_channels of stage {i + 1}: (first, inner, out) triples with one out width, "
                             f"got {list(stage)}")


class ResNet(nn.Module):
    """A residual (or, with ``residual=False``, plain) network.

    Input is an NCHW float tensor.  ``num_classes=0`` removes the classifier (the output
    is then the pooled features, or the feature map with ``global_pool=""``).  ``stem_width``: the
    stem's width (default ``widths[0]``; deep stems 32, doubled at their output); ``stem_pool``:
    default ``"max"`` after an ImageNet or deep stem, none after the CIFAR stem. Pre-activation blocks
    get a stem without norm and a final norm + ReLU before the head. ``block_channels``: per stage, per block,
    a bottleneck's three conv widths, overriding ``widths`` (timm's pruned nets). Other keyword arguments are
    the block options of :class:`~resnets.blocks.BlockOptions`.
    """

    def __init__(
        self,
        block: Block | str,
        layers: Sequence[int],
        widths: Sequence[int] = IMAGENET_WIDTHS,
        *,
        stem: Stem = "imagenet",
        stem_width: int | None = None,
        stem_pool: StemPool | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        down_last: bool = False,
        drop_path_rate: float = 0.0,
        zero_init_residual: bool = False,
        global_pool: Pool = "avg",
        drop_rate: float = 0.0,
        classifier_activation: str | None = None,
        block_channels: BlockChannels | None = None,
        **block_options,
    ) -> None:
        super().__init__()
        block, options, stem_pool = _check_arguments(block, layers, widths, stem, stem_pool, num_classes, global_pool,
                                                     classifier_activation, drop_rate, drop_path_rate, block_options)
        _check_block_channels(block, layers, block_channels)
        self.preact = block.preact
        self.stem_type = stem
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.classifier_activation = classifier_activation
        self.input_size = (3, 32, 32) if stem == "cifar" else (3, 224, 224)

        default_width = 32 if stem.startswith("deep") else widths[0]
        self.conv1, stem_ch = _stem_conv(stem, in_chans, stem_width or default_width, options)
        if not self.preact:
            self.bn1 = norm_layer(options.norm, stem_ch, options.bn_eps)
            self.bn_folds = (("conv1", "bn1"),)
        self.maxpool = _stem_pool(stem_pool, stem_ch, options)

        stem_reduction = 1 if stem == "cifar" else 2
        self.feature_info: list[dict] = [
            {"module": "conv1" if self.preact else "bn1", "num_chs": stem_ch, "reduction": stem_reduction}]
        in_ch = self._add_stages(block, layers, widths, stem_ch, stem_reduction * (2 if stem_pool else 1), down_last,
                                 drop_path_rate, options, block_channels)
        self.num_features = in_ch
        if self.preact:
            self.norm = norm_layer(options.norm, in_ch, options.bn_eps)
            self.post_act = activation(options.norm)
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(in_ch, num_classes) if num_classes else nn.Identity()

        self._init_weights(zero_init_residual)

    def _add_stages(self, block: Block, layers: Sequence[int], widths: Sequence[int], in_ch: int, reduction: int,
                    down_last: bool, drop_path_rate: float, options: BlockOptions,
                    block_channels: BlockChannels | None) -> int:
        """``layer1``, ``layer2``...: stride 2 from the second stage on (or, ``down_last``, in every stage but the
        last), stochastic depth rising linearly over the blocks, each stage's map in ``feature_info``; returns the
        last stage's channels."""
        total = sum(layers)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stage_names: list[str] = []
        for i, (blocks, width) in enumerate(zip(layers, widths)):
            stride = (2 if i < len(layers) - 1 else 1) if down_last else (1 if i == 0 else 2)
            reduction *= stride
            name = f"layer{i + 1}"
            first = sum(layers[:i])
            channels = block_channels[i] if block_channels else None
            self.add_module(name, make_stage(block, in_ch, width, blocks, stride, down_last=down_last,
                                             drop_paths=rates[first:first + blocks], channels=channels,
                                             options=options))
            in_ch = channels[0][-1] if channels else width * block.expansion
            self.stage_names.append(name)
            self.feature_info.append({"module": name, "num_chs": in_ch, "reduction": reduction})
        return in_ch

    def _init_weights(self, zero_init_residual: bool) -> None:
        if next(self.parameters()).is_meta:  # shapes only (counts, summaries): drawing values there is pure cost
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    m.zero_init_last()

    # --- forward passes -------------------------------------------------------------

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self._stem_map(x))

    def _stem_map(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's map before its pool: feature 0 of :meth:`forward_intermediates`."""
        if x.ndim != 4:
            raise BadInput(f"expected an NCHW batch (4 dims), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise BadInput(
                f"expected {self.in_chans} input channels (NCHW), got shape {tuple(x.shape)}"
                + ("; for NHWC input use x.permute(0, 3, 1, 2)" if x.shape[-1] == self.in_chans else "")
            )
        x = self.conv1(x)
        return x if self.preact else F.relu(self.bn1(x))

    def forward_post(self, x: torch.Tensor) -> torch.Tensor:
        """What follows the last stage before the head: the final norm + ReLU of pre-activation nets."""
        return self.post_act(self.norm(x)) if self.preact else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, ``(N, num_features, H/32, W/32)`` for the ImageNet nets."""
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.forward_post(x)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """Feature maps for detection/segmentation backbones, as timm's ``forward_intermediates(...,
        intermediates_only=True)``: the stem's map before its pool (index 0), then each stage's output (1..4 = C2..C5
        for the ImageNet nets), as ``feature_info`` lists them.

        ``indices`` as timm's: None every map, an int the last n (``3``: C3..C5), a sequence those indices (negative
        from the end); the maps come in network order. Stages after the last requested one are not run. The last
        stage's output is the map the head sees (after the final norm of pre-activation nets).
        """
        take, last = feature_take_indices(len(self.stage_names) + 1, indices)
        x = self._stem_map(x)
        outs = [x] if 0 in take else []
        if last:
            x = self.maxpool(x)
        for i, name in enumerate(self.stage_names[:last], start=1):
            x = getattr(self, name)(x)
            if i == len(self.stage_names):
                x = self.forward_post(x)
            if i in take:
                outs.append(x)
        return outs

    def forward_after(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """The last feature map from stage ``stage``'s output (as :meth:`forward_intermediates` gives it)."""
        last = len(self.stage_names)
        for name in self.stage_names[stage:]:
            x = getattr(self, name)(x)
        return self.forward_post(x) if stage < last else x

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
            return scaled_softmax(x, self.temperature)
        if self.classifier_activation == "sigmoid":
            return x.sigmoid()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def temperature(self) -> float:
        """The softmax temperature the weights record (``resnets calibrate``; 1.0 when uncalibrated): probabilities
        divide the logits by it (this head's softmax, ``resnets.pipeline.logit_probabilities``); logits stay raw."""
        return getattr(getattr(self, "pretrained_cfg", None), "temperature", 1.0)

    # --- surgery --------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Pool | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it); ``pretrained_cfg`` then says
        so (its class names and metrics were the old head's)."""
        if global_pool is not None:
            self.global_pool = global_pool
        if num_classes and not self.global_pool:
            raise BadInput("a classifier needs global pooling; pass global_pool='avg' or 'max'")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if hasattr(self, "pretrained_cfg"):
            self.pretrained_cfg = self.pretrained_cfg.with_new_head(num_classes)

    # --- Keras-like conveniences ----------------------------------------------------

    def summary(self, input_size: Sequence[int] | None = None, print_fn=print, depth: int = 3):
        """Print a Keras-style table of layers, output shapes and parameters; returns the stats."""
        from .summary import summarize

        return summarize(self, input_size or self.input_size, print_fn=print_fn, depth=depth)

    @torch.inference_mode()
    def predict(self, x, batch_size: int | None = None, verbose: int | str = "auto") -> np.ndarray | list[np.ndarray]:
        """Keras-style prediction: NHWC numpy (as ``preprocess_input`` returns) or NCHW tensor in, numpy out.

        Returns what the head gives, as Keras' ``predict`` does: probabilities from a head with
        ``classifier_activation`` (``resnets.ResNet50()``'s default "softmax", as in Keras), logits from one without
        (``create_model``'s and torchvision's default), features without a classifier, and a list of arrays from a
        features-only model (as Keras' multi-output models). ``decode_predictions`` takes probabilities only:
        softmax logits first.

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
            raise BadInput(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        batch_size = 32 if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BadInput(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(x, np.ndarray):
            if x.ndim == 3:
                x = x[None]
            if x.ndim != 4:
                raise BadInput(f"expected a batch of images, got array of shape {x.shape}")
            channels = self.in_chans
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
                    out = self(chunk.to(param.device, param.dtype))
                    outs.append([o.float().cpu() for o in out] if isinstance(out, list) else [out.float().cpu()])
                    bar.update(1)
        finally:
            self.train(was_training)
        arrays = [torch.cat(parts).numpy() for parts in zip(*outs)]
        return arrays if isinstance(out, list) else arrays[0]


class FeatureInfo:
    """timm's ``FeatureInfo``: every feature map's channels, reduction and module, and which of them a
    features-only model gives (``out_indices``); ``channels()``/``reduction()`` list those of its outputs, an index
    (or list of them) picks maps by their place in the whole list."""

    def __init__(self, info: list[dict], out_indices: Sequence[int]) -> None:
        self.info = info
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


class FeatureResNet(ResNet):
    """timm's ``features_only=True`` model: ``forward`` gives the feature maps of ``feature_info.out_indices``
    (as :meth:`ResNet.forward_intermediates` numbers them: 0 the stem's, 1.. the stages'), and ``feature_info``
    says their channels and reductions. Like timm's, it holds no head and no stage after the last map it gives, and
    keeps the network's parameter names, so its state dict is a ResNet's (and timm's features model's) less those.
    """

    feature_info: FeatureInfo

    @classmethod
    def from_network(cls, net: ResNet, out_indices: int | Sequence[int] | None = None) -> FeatureResNet:
        """``net`` itself made features-only (its modules stay; what follows the last wanted map goes)."""
        take, last = feature_take_indices(len(net.feature_info), out_indices)
        net.reset_classifier(0, "")
        for name in net.stage_names[last:]:
            setattr(net, name, nn.Sequential())  # empty, as timm prunes: no parameters, never run
        if last < len(net.stage_names) and net.preact:
            net.norm = nn.Identity()  # the final norm follows the last stage only
        if last == 0:
            net.maxpool = nn.Identity()
        net.num_features = net.feature_info[last]["num_chs"]
        net.__class__ = cls  # the same modules and names, a features-only forward
        net.feature_info = FeatureInfo(net.feature_info, sorted(set(take)))
        return net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_intermediates(x, list(self.feature_info.out_indices))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last map this model gives (its stages end there)."""
        return self.forward(x)[-1]
