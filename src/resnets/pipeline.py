"""What predict, features and eval share: a model with its preprocessing and classes, and batches of files.

The preprocessing and class list come from the weights (``model.pretrained_cfg``), so that a user
never pairs a checkpoint with the wrong input recipe.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .calibration import scaled_softmax
from .data.batches import calibration_batches, file_batches
from .data.images import ImageBatch
from .device import model_device, resolve_device
from .errors import BadInput, UnknownName
from .preprocess import CIFAR10, IMAGENET_TORCH, Preprocessing
from .inference.table import AUTO, PRECISIONS, backend as backend_entry, choose_backend
from .networks import ResNet
from .factory import create_model



@dataclass
class Inference:
    """A model ready for inference, the input recipe it expects and the names of its outputs."""

    model: nn.Module
    preprocessing: Preprocessing
    classes: Any  # "imagenet", "cifar10" or a sequence of names, as resnets.classes.decode_predictions takes
    name: str
    weights: str | None
    fast_decode: bool = False  # JPEGs decoded at a reduced scale still >= the resize size (load_img's min_side)
    backend: str = "eager"  # the engine running the model: "eager" (the network itself) or a backend's name
    backend_reason: str = ""  # why, when backend="auto" chose it
    precision: str = "fp32"
    calibration: list[torch.Tensor] | None = None  # the preprocessed batches int8 calibrated on
    network: nn.Module | None = None  # the eager fp32 network ``model`` was made from (same weights, no reload)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities from the model's outputs: the softmax of the logits over the weights' temperature
        (:func:`logit_probabilities`), unless the network ends in its own activation (Keras-style
        ``classifier_activation``), whose outputs already are (an optimized copy keeps it, temperature included)."""
        network = self.network if self.network is not None else self.model
        if getattr(network, "classifier_activation", None) is None:
            return logit_probabilities(network, outputs)
        return outputs

    @property
    def multi_label(self) -> bool:
        """Whether :meth:`probabilities` are each class's own (a sigmoid head) rather than a distribution over the
        classes, as ``decode_predictions(multi_label=)`` asks."""
        network = self.network if self.network is not None else self.model
        return getattr(network, "classifier_activation", None) == "sigmoid"

    @property
    def temperature(self) -> float:
        """The softmax temperature of the weights (:attr:`resnets.ResNet.temperature`; 1.0 when uncalibrated)."""
        return getattr(self.network if self.network is not None else self.model, "temperature", 1.0)

    def eager(self) -> Inference:
        """This model as the eager fp32 network (gradients, exact outputs: what maps need): itself when it is one,
        else the network it was made from, else (an :class:`Inference` made without it) its weights reloaded."""
        if isinstance(self.model, ResNet):
            return self
        if isinstance(self.network, ResNet):
            return dataclasses.replace(self, model=self.network, backend="eager", backend_reason="",
                                       precision="fp32", calibration=None)
        if self.weights is None:
            raise BadInput("this needs the eager network, and a model with random weights cannot be reloaded: use "
                           "precision='fp32' and backend='torch'")
        return load_inference(self.name, self.weights, device=self.device)

    def stage_map(self, stage: int, eager: bool = False) -> nn.Module:
        """Stage ``stage``'s feature map (1-based; the last as the head sees it), where feature vectors and heat
        maps start, run the way the model runs (:meth:`optimized`), or on the eager network with ``eager``."""
        net = StageMap(self.eager().model, stage).eval()
        return net if eager else self.optimized(net)

    def optimized(self, module: nn.Module) -> nn.Module:
        """``module`` (built from this model's eager network: a feature extractor, its first stages) run the way
        the model runs: the same precision, backend and int8 calibration; as it is where the model is eager."""
        if self.backend == "eager":
            return module
        from .inference import optimize

        size = self.preprocessing.crop_size or _network(module).input_size[-1]
        return optimize(module, self.precision, example_inputs=torch.zeros(1, 3, size, size),
                        calibration=self.calibration, backend=self.backend)

    def describe(self) -> str:
        """One line saying what runs: ``resnet50 (imagenet), int8 on openvino (auto: ...)``, as ``--verbose`` prints."""
        why = f" (auto: {self.backend_reason})" if self.backend_reason else ""
        return f"{self.name} ({self.weights or 'random weights'}), {self.precision} on {self.backend}{why}, {self.device}"

    @property
    def device(self) -> torch.device:
        """Where the model runs; batches are moved there by :func:`run_model`."""
        return model_device(self.model)

    def batches(self, paths: Sequence[Path], batch_size: int = 32,
                workers: int = 2) -> Iterator[tuple[ImageBatch, Sequence[Path]]]:
        """:func:`file_batches` of ``paths`` with this model's preprocessing, decoding and device."""
        recipe = self.preprocessing
        min_side = (recipe.resize_size or recipe.crop_size) if self.fast_decode else None
        return file_batches(paths, recipe, batch_size, workers, pin_memory=self.device.type == "cuda",
                            min_side=min_side)


class StageMap(nn.Module):
    """The feature map of one stage of a :class:`ResNet` (1-based; the last as the head sees it)."""

    def __init__(self, model: ResNet, stage: int) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_intermediates(x, [self.stage])[0]


class StageFeatures(nn.Module):
    """Pooled output of one stage (1-based; ``None`` = the last): a feature extractor as a plain module."""

    def __init__(self, model: ResNet, stage: int | None, pooling: str) -> None:
        super().__init__()
        if pooling not in ("avg", "max"):
            raise BadInput(f"pooling must be 'avg' or 'max', got {pooling!r}")
        self.model, self.pooling = model, pooling
        self.stage = len(model.stage_names) if stage is None else stage
        if not 1 <= self.stage <= len(model.stage_names):
            raise BadInput(f"stage must lie in 1..{len(model.stage_names)}, got {stage}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_map(self.model.forward_intermediates(x, [self.stage])[0], self.pooling)


def pool_map(fmap: torch.Tensor, pooling: str) -> torch.Tensor:
    """An (N, C, H, W) feature map pooled to (N, C) vectors: ``"avg"`` or ``"max"`` over the positions."""
    pooled = F.adaptive_avg_pool2d(fmap, 1) if pooling == "avg" else F.adaptive_max_pool2d(fmap, 1)
    return pooled.flatten(1)


def load_inference(
    model_name: str | None,
    weights: str | os.PathLike | None,
    precision: str = "fp32",
    features: tuple[str, int | None] | None = None,
    calibration: Sequence[Path] | torch.Tensor | None = None,
    device: str | torch.device | None = "cpu",
    backend: str | None = None,
    fast_decode: bool = False,
    **model_kwargs: Any,
) -> Inference:
    """Build ``model_name`` (None: the network the weights record) with ``weights`` in eval mode on ``device`` (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``); fp32 runs eagerly, bf16, fp16 (CUDA) and int8 (CPU) through :func:`resnets.optimize`.

    ``features=(pooling, stage)`` makes it a feature extractor (see :class:`StageFeatures`).
    ``calibration``: the user's own images (file paths, or a uint8 NCHW tensor) that int8 calibrates
    on, preprocessed with the weights' recipe. Without weights the recipe and classes default to the
    model family's (ImageNet or CIFAR-10).  ``backend``: ``None`` (default: fp32 runs the eager network,
    exact and with no build wait; other precisions ``"auto"``), ``"auto"`` (the fastest engine installed for this
    CPU and precision, :func:`resnets.inference.table.choose_backend`; fp32 included) or one of
    :data:`resnets.inference.BACKENDS` (``"onnxruntime"``, ``"openvino"``: the CPU engines, fp32 included,
    through :func:`resnets.optimize`; ``"torch"`` at fp32 is the eager network).
    ``fast_decode``: see :attr:`Inference.fast_decode`.
    """
    if precision not in PRECISIONS:
        raise UnknownName(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if str(device) == "auto" and backend not in (None, AUTO) and backend_entry(backend).devices == ("cpu",):
        device = "cpu"  # a CPU engine runs on the CPU, GPU or not
    dev = resolve_device(device)
    reason = ""
    if backend == AUTO or (backend is None and precision != "fp32"):
        choice = choose_backend(precision, dev)
        backend, reason = choice.backend, choice.reason
    model: nn.Module = create_model(model_name, weights=weights, **model_kwargs).eval().to(dev)
    cfg = getattr(model, "pretrained_cfg", None)
    model_name = model_name or cfg.model
    if cfg is not None:
        preprocessing, classes = cfg.preprocessing, cfg.classes
    elif model.stem_type == "cifar":
        preprocessing, classes = CIFAR10, "cifar10"
    else:
        preprocessing, classes = IMAGENET_TORCH, "imagenet"
    network = model
    if features is not None:
        model = StageFeatures(model, features[1], features[0]).eval()
    engine = "eager" if precision == "fp32" and backend in (None, "torch") else backend
    inf = Inference(model, preprocessing, classes, model_name, None if weights is None else str(weights),
                    fast_decode, engine, reason, precision, network=network)
    if PRECISIONS[precision].needs_calibration and calibration is not None:
        inf.calibration = calibration_batches(calibration, preprocessing)
    inf.model = inf.optimized(model)  # every engine but eager runs fp32 faster than eager too
    return inf


def _network(module: nn.Module) -> ResNet:
    """The ResNet inside ``module`` (itself, or the network a :class:`StageFeatures`-like wrapper holds)."""
    return module if isinstance(module, ResNet) else next(m for m in module.modules() if isinstance(m, ResNet))


@torch.inference_mode()
def run_model(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Float32 outputs of ``model`` on a batch, on the CPU (empty batches allowed); the batch is
    moved to the model's device first."""
    if not len(images):
        return images.new_zeros((0,))
    return model(images.to(model_device(model), non_blocking=True)).float().cpu()


def logit_probabilities(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from raw logits, by the network's head: sigmoid for a Keras-style
    ``classifier_activation="sigmoid"``, else the softmax of ``logits / T``, ``T`` the temperature its weights
    record (:attr:`resnets.ResNet.temperature`; 1.0 for any other module)."""
    if getattr(model, "classifier_activation", None) == "sigmoid":
        return logits.sigmoid()
    return scaled_softmax(logits, getattr(model, "temperature", 1.0))
