"""An exponential moving average of the weights, as torchvision's classification reference keeps it.

``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``, averaging the buffers too (BatchNorm's
running statistics: ``use_buffers=True``). The decay is adjusted as the reference does (after pycls), so
that ``model_ema_decay`` means the same whatever the batch size, the update interval and the run length; the
average is updated every ``model_ema_steps`` steps of an epoch and keeps copying the weights during the
learning-rate warm-up epochs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def adjusted_decay(decay: float, steps: int, batch_size: int, epochs: int) -> float:
    """torchvision's adjustment: ``1 - min(1, (1 - decay) * batch_size * steps / epochs)``.

    ``batch_size`` is the global batch (the reference's world size times its per-GPU batch).
    """
    return 1.0 - min(1.0, (1.0 - decay) * batch_size * steps / epochs)


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """The averaged copy of ``model`` (on its device) with the already-adjusted ``decay``."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module, epoch_step: int, every: int, warming_up: bool) -> None:
    """After optimisation step ``epoch_step`` (0-based, within the epoch): fold ``model`` into the average every
    ``every`` steps; during the warm-up epochs the average restarts from the weights (the reference's reset)."""
    if epoch_step % every:
        return
    ema.update_parameters(model)
    if warming_up:
        ema.n_averaged.fill_(0)
