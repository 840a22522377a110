"""``resnets.train(...)``: a run from its options, on this process (or each torchrun process), torch's global
settings put back afterwards.

Data live in memory as uint8 tensors (decoded once, :mod:`.data`), or stream from the files when too
large (:mod:`.streaming`); either way each step draws the same global batch and augmentation
(:mod:`.batches`), so a resumed run, or a run on another number of processes, sees the same batches.
The epochs themselves are :class:`~resnets.train.trainer.Trainer`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig, for_weights, run_config
from .data import list_splits
from .distributed import setup, teardown
from .model import classifier_size, load_weights
from .precision import resolve_precision
from .run_folder import run_folder
from .trainer import Trainer
from .validate import check_config


def train(config: TrainConfig | None = None, /, *, model: str | nn.Module | None = None,
          on_epoch_end: Callable[[dict[str, Any]], bool | None] | None = None, **options: Any) -> dict[str, Any]:
    """Train a model and return the run's metrics: the last epoch's, with ``history`` (one row per epoch).

    ``train(model="resnet20", data="DATA", epochs=30)`` takes the options of ``resnets train`` by their
    :class:`TrainConfig` names (``recipe="paper-cifar"``, ``resume=True, out="runs/x"``...); or pass a whole
    ``TrainConfig``. ``model`` is a registry name or an ``nn.Module`` to train as is. A progress bar shows
    on a terminal and in a notebook (``progress=False`` hides it).

    ``on_epoch_end(row)`` is called with each epoch's metrics row once its checkpoint is written; a true answer
    stops the run there (Keras' ``stop_training``), and ``resume=True`` continues it later, with another length
    if ``epochs=`` says so. Under torchrun one rank's true answer stops every rank.

    Under ``torchrun`` every process calls this; they train one model with DDP and rank 0 writes.
    torch's global settings that a run changes (threads, deterministic algorithms, the RNG) are
    restored on return.
    """
    module = model if isinstance(model, nn.Module) else None
    if config is None:
        config = run_config(model=None if module is not None else model, **options)
    elif options or isinstance(model, str):
        raise TypeError("train() takes a TrainConfig or options, not both")
    check_config(config)
    with _restored_torch_state():
        ctx = setup(config.device)
        try:
            config = dataclasses.replace(config, precision=resolve_precision(config.precision, ctx.device))
            splits = list_splits(config)  # the classes, before the weights are read for them
            torch.manual_seed(config.seed)  # a new classifier on pretrained weights starts from the run's seed
            pretrained = load_weights(config, classifier_size(config, len(splits.train.classes)),  # read once
                                      splits.train.classes)
            config = for_weights(config, pretrained.pretrained_cfg if pretrained is not None else None)
            with run_folder(Path(config.out), config.resume, ctx.is_main):
                return Trainer(config, ctx, module, pretrained, splits).run(on_epoch_end)
        finally:
            teardown(ctx)


@contextlib.contextmanager
def _restored_torch_state() -> Iterator[None]:
    """Put back torch's thread count, deterministic-algorithms mode and CPU RNG after a run."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_rng_state(rng)
