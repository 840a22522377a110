"""Batch mixing (MixUp, CutMix) and the losses on the soft targets it makes.

As torchvision's classification reference: MixUp and/or CutMix from ``transforms.v2`` with one of them chosen
per batch (``RandomChoice``), on the normalised batch, pairing each image with its neighbour in this process's
share of the batch; cross-entropy on the mixed targets (with label smoothing on top). ``loss="bce"`` is timm's
``BinaryCrossEntropy``: the targets smoothed, optionally made 0/1 above ``bce_target_thresh``, then a sigmoid
binary cross-entropy per class. The transforms draw from torch's global generator, so a step runs them under a
seed drawn from the trainer's checkpointed generator (as :func:`~resnets.train.policies.seeded` does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ..errors import BadInput, UnknownName
from ..choices import LOSSES
from .policies import kept_rng, reseed


def batch_mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> v2.Transform | None:
    """torchvision's reference ``get_mixup_cutmix``: MixUp and/or CutMix, one per batch; ``None`` when both are 0."""
    for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if alpha < 0:
            raise BadInput(f"{name} must be >= 0 (0: off), got {alpha}")
    chosen = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + \
             ([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
    return v2.RandomChoice(chosen) if chosen else None


def mix(mixing: v2.Transform, images: torch.Tensor, labels: torch.Tensor, seed: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed images and their (N, classes) soft targets, drawn under ``seed``; torch's global RNG is kept."""
    with kept_rng(images.device):
        reseed(seed, images.device)
        return mixing(images, labels)


def soft_targets(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices or soft targets as (N, classes) probabilities, label-smoothed: ``(1 - s) * t + s / classes``
    (timm's ``mixup_target`` and torch's ``label_smoothing`` alike)."""
    probs = F.one_hot(targets, num_classes).float() if targets.ndim == 1 else targets.float()
    return probs * (1 - smoothing) + smoothing / num_classes if smoothing else probs


class TrainLoss(torch.nn.Module):
    """The training loss on class indices or soft targets: ``"ce"`` (cross-entropy) or ``"bce"`` (timm's
    ``BinaryCrossEntropy``), with ``label_smoothing``; ``bce_target_thresh`` (bce only) turns the smoothed
    targets into 0/1 at that threshold."""

    def __init__(self, loss: str = "ce", label_smoothing: float = 0.0, bce_target_thresh: float | None = None) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise UnknownName(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if bce_target_thresh is not None and loss != "bce":
            raise BadInput("bce_target_thresh= applies to loss='bce' only")
        self.loss, self.smoothing, self.threshold = loss, label_smoothing, bce_target_thresh

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.loss == "ce":
            return F.cross_entropy(logits, targets, label_smoothing=self.smoothing)
        probs = soft_targets(targets, logits.shape[-1], self.smoothing)
        if self.threshold is not None:
            probs = probs.gt(self.threshold).to(probs.dtype)
        return F.binary_cross_entropy_with_logits(logits, probs)
