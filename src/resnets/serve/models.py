"""The model cache of the service: what the model thread runs for each kind of request.

The classifier is the served model (compiled ones at a few static batch sizes); feature extractors and
explainers are built on first use around the eager fp32 network and kept by their arguments.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from torch import nn

from ..explain import explain
from ..factory import create_model
from ..pipeline import Inference, StageFeatures

log = logging.getLogger("resnets.serve")
CLASSIFY = "classify"


class Models:
    """Key -> module for the model thread: the classifier, and feature extractors and explainers built on
    first use.

    Those run the eager fp32 network (exact, as ``resnets features`` and ``resnets explain`` at fp32):
    the served model itself when it is eager, else one eager copy loaded once and shared by them all.
    """

    def __init__(self, inf: Inference, classifier: nn.Module) -> None:
        self.inf, self.classifier = inf, classifier
        self._eager: nn.Module | None = inf.model if hasattr(inf.model, "stage_names") else None
        self._extra: dict[tuple, nn.Module] = {}
        self._lock = threading.Lock()

    def __call__(self, key: Any) -> nn.Module:
        kind = key[0]
        return self.classifier if kind == CLASSIFY else self._extra[kind]

    def eager(self) -> nn.Module:
        """The eager network (blocking: loads it the first time)."""
        with self._lock:
            if self._eager is None:
                log.info("loading an eager fp32 %s for /v1/features", self.inf.name)
                self._eager = create_model(self.inf.name, weights=self.inf.weights).eval()
            return self._eager

    def features(self, pooling: str, layer: int | None) -> tuple[str, int]:
        """The key of the extractor for ``pooling`` and ``layer`` (None: last stage), created if new."""
        model = self.eager()
        extractor = StageFeatures(model, layer, pooling).eval()  # validates both, naming the bad one
        key = ("features", pooling, extractor.stage)
        self._extra.setdefault(key, extractor)
        return key

    def explainer(self, method: str, layer: int | None, target: int | None) -> tuple:
        """The key of the :class:`ExplainMaps` for these arguments, created if new."""
        key = ("explain", method, layer, target)
        self._extra.setdefault(key, ExplainMaps(self.eager(), method, layer, target))
        return key


class ExplainMaps(nn.Module):
    """:func:`resnets.explain.explain` as a module the batcher can run: per image one row of
    ``(class, probability, heat map flattened)``."""

    def __init__(self, model: nn.Module, method: str, layer: int | None, target: int | None) -> None:
        super().__init__()
        self.model, self.method, self.layer, self.target = model, method, layer, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        found = explain(self.model, x, self.target, self.method, self.layer)
        return torch.cat([found.classes[:, None].float(), found.probabilities[:, None].float(),
                          found.maps.flatten(1).float()], dim=1)


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
    into one dynamic-shape graph for all sizes, which ran int8 ResNet-50 at about half the speed of
    static graphs (measured at batch 2 to 16 on the project's 2-core CPU; see the README's Serving).
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
