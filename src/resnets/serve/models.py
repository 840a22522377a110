"""The model cache of the service: what the model thread runs for each kind of request.

The classifier is the served model (compiled ones at a few static batch sizes).  Feature vectors and heat maps
of a stage both start from that stage's feature map: one copy of the stages up to it, built on first use and run
the way the served model runs (its precision, backend and int8 calibration; see ``Inference.optimized``), serves
``/v1/features`` (pooled here) and ``/v1/explain`` (the rest of the network, with gradients for the map alone,
in eager fp32).  ``ServeConfig.eager_extras`` runs both on the eager fp32 network instead, exact as
``resnets features`` and ``resnets explain`` at fp32.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from torch import nn

from ..explain import checked_layer, explain_map
from ..pipeline import Inference, StageFeatures, pool_map

log = logging.getLogger("resnets.serve")
CLASSIFY = "classify"


class Models:
    """Key -> module for the model thread: the classifier, and feature extractors and explainers built on
    first use around one stage map per stage (see the module docstring)."""

    def __init__(self, inf: Inference, classifier: nn.Module, map_sizes: tuple[int, ...] = (),
                 eager_extras: bool = False) -> None:
        self.inf, self.classifier = inf, classifier
        self.map_sizes, self.eager_extras = map_sizes, eager_extras
        self._eager: nn.Module | None = None
        self._maps: dict[int, nn.Module] = {}
        self._extra: dict[tuple, nn.Module] = {}
        self._lock = threading.Lock()

    def __call__(self, key: Any) -> nn.Module:
        kind = key[0]
        return self.classifier if kind == CLASSIFY else self._extra[kind]

    def eager(self) -> nn.Module:
        """The eager fp32 network (:meth:`Inference.eager`: the one the served model was made from; reloaded,
        blocking, for an :class:`Inference` made without it)."""
        with self._lock:
            if self._eager is None:
                self._eager = self.inf.eager().model
            return self._eager

    def stage_map(self, stage: int) -> nn.Module:
        """The module computing stage ``stage``'s map, built (and compiled at ``map_sizes``) the first time:
        blocking, so callers run it off the event loop; the model thread goes on serving meanwhile."""
        model = self.eager()
        with self._lock:
            if stage not in self._maps:
                eager = self.eager_extras or self.inf.backend == "eager"
                if not eager:
                    log.info("building stage %d of %s at %s on %s", stage, self.inf.name, self.inf.precision,
                             self.inf.backend)
                net = self.inf.stage_map(stage, eager=eager)
                if compiles_per_shape(net):  # static graphs at a few sizes, compiled here and now
                    net = StaticBatches(net, self.map_sizes)
                    size = self.inf.preprocessing.crop_size or model.input_size[-1]
                    for n in self.map_sizes:
                        net(torch.zeros(n, 3, size, size))
                self._maps[stage] = net
            return self._maps[stage]

    def features(self, pooling: str, layer: int | None) -> tuple[str, str, int]:
        """The key of the extractor for ``pooling`` and ``layer`` (None: last stage), created if new."""
        stage = StageFeatures(self.eager(), layer, pooling).stage  # validates both, naming the bad one
        key = ("features", pooling, stage)
        if key not in self._extra:
            self._extra.setdefault(key, PooledMap(self.stage_map(stage), pooling))
        return key

    def explainer(self, method: str, layer: int | None, target: int | None) -> tuple:
        """The key of the :class:`ExplainMaps` for these arguments, created if new."""
        model = self.eager()
        stage = checked_layer(model, method, layer)  # BadInput for a bad method, layer or CAM on this net
        key = ("explain", method, stage, target)
        if key not in self._extra:
            self._extra.setdefault(key, ExplainMaps(model, self.stage_map(stage), method, stage, target))
        return key


class PooledMap(nn.Module):
    """Feature vectors: a stage map pooled (``avg`` or ``max``)."""

    def __init__(self, stage_map: nn.Module, pooling: str) -> None:
        super().__init__()
        self.stage_map, self.pooling = stage_map, pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_map(self.stage_map(x), self.pooling)


class ExplainMaps(nn.Module):
    """:func:`resnets.explain.explain_map` on a stage map as a module the batcher can run: per image one row of
    ``(class, probability, heat map flattened)``."""

    def __init__(self, model: nn.Module, stage_map: nn.Module, method: str, layer: int, target: int | None) -> None:
        super().__init__()
        self.model, self.stage_map = model, stage_map
        self.method, self.layer, self.target = method, layer, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            fmap = self.stage_map(x)
        found = explain_map(self.model, fmap, tuple(x.shape[-2:]), self.target, self.method, self.layer)
        return torch.cat([found.classes[:, None].float(), found.probabilities[:, None].float(),
                          found.maps.flatten(1).float()], dim=1)


def compiles_per_shape(model: nn.Module) -> bool:
    """Whether ``model`` is torch-compiled (one graph per input shape: ``InferenceModel.compiled`` is True), unlike
    the other engines' models, which take any batch size as it comes (OpenVINO's ``compiled(hint)`` is a method)."""
    return getattr(model, "compiled", False) is True


def batch_sizes(max_batch: int, most: int = 8) -> tuple[int, ...]:
    """The batch sizes a compiled model runs at: powers of two below ``max_batch``, and ``max_batch``.

    At most ``most`` (the largest ones; smaller batches pad up to the smallest): torch.compile keeps
    8 graphs per function by default, then falls back to eager.
    """
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch] + [max_batch]
    return tuple(sizes[-most:])


class StaticBatches(nn.Module):
    """Runs a compiled model at fixed batch sizes only, each compiled once as its own static-shape graph.

    A batch is padded with zeros up to the next size and the padding's rows dropped (in eval mode a
    row's output depends on that row alone). Why: left alone, torch.compile turns a second batch size
    into one dynamic-shape graph for all sizes, which runs well below static graphs (the README's Serving
    has the measurement).
    """

    def __init__(self, model: nn.Module, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.sizes = model, sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        size = next(s for s in self.sizes if s >= n)
        if size > n:
            x = torch.cat([x, x.new_zeros(size - n, *x.shape[1:])])
        with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
            return self.model(x)[:n]
